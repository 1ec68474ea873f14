from __future__ import annotations

import ipaddress
from decimal import Decimal
from pathlib import Path

import pytest

from capd.config import load_settings
from capd.errors import ConfigError


def test_defaults() -> None:
    s = load_settings(environ={})
    assert s.database_url == "sqlite:///capd.db"
    assert s.result_ttl_s == 300 and s.max_polls_per_task == 120 and s.max_polls_per_s == 10
    assert s.max_image_bytes == 51_200 and s.min_image_bytes == 100
    assert s.price_per_1000("ImageToTextTask") == Decimal("0.3")
    assert s.ban_duration_s == 600


def test_toml_then_environment(tmp_path: Path) -> None:
    path = tmp_path / "capd.toml"
    path.write_text('max_polls_per_s = 20\ntrusted_proxies = ["10.0.0.0/8"]\n'
                    '[prices]\nImageToTextTask = 0.5\nRecaptchaV2Task = "1.2"\n')
    s = load_settings(path, environ={"CAPD_MAX_POLLS_PER_S": "30"})
    assert s.max_polls_per_s == 30
    assert s.trusted_proxies == (ipaddress.ip_network("10.0.0.0/8"),)
    assert s.price_per_1000("ImageToTextTask") == Decimal("0.5")
    assert s.price_per_1000("RecaptchaV2Task") == Decimal("1.2")


def test_environment_mappings() -> None:
    s = load_settings(environ={"CAPD_DEADLINES_S": "RecaptchaV2Task=90,HCaptchaTask=120",
                               "CAPD_ALLOW_PRIVATE_PROXIES": "yes"})
    assert s.deadline_s("RecaptchaV2Task", built_in=False) == 90
    assert s.deadline_s("TurnstileTask", built_in=False) == 180
    assert s.allow_private_proxies is True


@pytest.mark.parametrize(("name", "value"), [
    ("CAPD_MAX_POLLS_PER_S", "ten"), ("CAPD_MAX_POLLS_PER_S", "-1"), ("CAPD_PRICES", "x"),
    ("CAPD_TRUSTED_PROXIES", "not-an-ip"), ("CAPD_ALLOW_PRIVATE_PROXIES", "maybe"),
    ("CAPD_DEFAULT_PRICE_PER_1000", "NaN"),
])
def test_bad_values_are_refused_with_the_setting_named(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name[5:].lower()):
        load_settings(environ={name: value})


def test_unknown_toml_setting(tmp_path: Path) -> None:
    path = tmp_path / "capd.toml"
    path.write_text("no_such_setting = 1\n")
    with pytest.raises(ConfigError, match="no_such_setting"):
        load_settings(path, environ={})
