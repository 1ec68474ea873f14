"""The error catalogue (spec §10): each code once, with its description.

Front doors render a ``CapdError`` in their own dialect; the domain raises them.
"""

from __future__ import annotations

CATALOGUE: dict[str, str] = {
    "ERROR_KEY_DOES_NOT_EXIST": "Account authorization key not found in the system or has "
    "incorrect format",
    "ERROR_ZERO_BALANCE": "Account has zero or negative balance",
    "ERROR_TOO_BIG_CAPTCHA_FILESIZE": "Size of the captcha you are uploading is more than "
    "51200 bytes (or the request body is over 1 MiB)",
    "ERROR_ZERO_CAPTCHA_FILESIZE": "Captcha image is missing, cannot be decoded or is "
    "smaller than 100 bytes",
    "ERROR_NO_SUCH_CAPCHA_ID": "The captcha you are requesting does not exist in your "
    "current captchas list or has expired",
    "ERROR_CAPTCHA_UNSOLVABLE": "Captcha could not be solved",
    "ERROR_IP_NOT_ALLOWED": "Request with current account key is not allowed from your IP",
    "ERROR_IP_BANNED": "Your IP is banned due to repeated requests with unknown keys",
    "ERROR_NO_SUCH_METHOD": "Request to API made with method which does not exist",
    "ERROR_TOO_MUCH_REQUESTS": "Too many requests for this task",
    "ERROR_DOMAIN_NOT_ALLOWED": "Captchas from this domain are not allowed",
    "ERROR_TOKEN_EXPIRED": "The token given with the task has expired",
    "ERROR_NO_SLOT_AVAILABLE": "No idle workers are available for this task type right now",
    "ERROR_RECAPTCHA_INVALID_SITEKEY": "Captcha website key is invalid",
    "ERROR_RECAPTCHA_INVALID_DOMAIN": "Captcha website URL is invalid or does not match the key",
    "ERROR_RECAPTCHA_TIMEOUT": "Captcha was not solved in time",
    "ERROR_IP_BLOCKED": "This account is temporarily blocked from your IP after repeated "
    "violations",
    "ERROR_PROXY_CONNECT_REFUSED": "Could not connect to the proxy",
    "ERROR_PROXY_BANNED": "The proxy is banned by the target website",
    "ERROR_PROXY_MISSING": "The task needs a complete proxy (proxyType, proxyAddress, proxyPort)",
    "ERROR_PROXY_NOT_AUTHORISED": "The proxy refused the given login and password",
    "ERROR_PROXY_READ_TIMEOUT": "The proxy accepted the connection but did not answer in time",
    "ERROR_TASK_NOT_SUPPORTED": "Task type is not supported or disabled",
    "ERROR_TASK_ABSENT": "Task property is empty or not set in createTask; or the body is "
    "not JSON",
    "ERROR_WRONG_USERAGENT": "userAgent is outdated or not a browser user agent",
    "ERROR_BAD_PARAMETERS": "A task field is missing or has a wrong type or value",
    # worker protocol (spec §7)
    "ERROR_WORKER_TOKEN_INVALID": "Worker token unknown or revoked, or a type outside the "
    "token's allowed types",
    "ERROR_LEASE_NOT_FOUND": "Lease unknown or expired, or its task already completed",
    "ERROR_BAD_SOLUTION": "The solution does not fit the task type's solution shape",
    "ERROR_INTERNAL": "Internal error; the request can be retried",
    "ERROR_SERVICE_UNAVAILABLE": "The store is temporarily unavailable; retry shortly",
}


class CapdError(Exception):
    """Raised when a request ends in one of the catalogue's outcomes."""

    def __init__(self, code: str, detail: str | None = None) -> None:
        if code not in CATALOGUE:
            raise ValueError(f"unknown error code {code}")
        super().__init__(code)
        self.code = code
        self.detail = detail

    @property
    def description(self) -> str:
        base = CATALOGUE[self.code]
        return f"{base}: {self.detail}" if self.detail else base


class BadParameter(CapdError):
    """Raised when a request field is missing, of the wrong JSON type or out of range."""

    def __init__(self, field: str, why: str = "missing or invalid") -> None:
        super().__init__("ERROR_BAD_PARAMETERS", f"field '{field}' is {why}")
        self.field = field


class ConfigError(Exception):
    """Raised when settings or command-line input cannot be used."""


class InsufficientFunds(Exception):
    """Raised by a store when a reservation would exceed the available balance."""
