"""capd: a self-hosted captcha recognition service (CapMonster Cloud compatible)."""

__version__ = "0.1.0"
