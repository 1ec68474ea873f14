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


@pytest.mark.parametrize(("name", "value", "bad"), [
    ("CAPD_PRICES", "RecaptchaV2Tsk=1.2", "RecaptchaV2Tsk"),
    ("CAPD_DEADLINES_S", "TurnstileTask=90,HCaptchaTsk=120", "HCaptchaTsk"),
    ("CAPD_QUEUE_DEPTH_LIMITS", "imagetotexttask=5", "imagetotexttask"),
])
def test_a_misspelt_task_type_is_refused_with_its_name(name: str, value: str, bad: str) -> None:
    with pytest.raises(ConfigError, match=f"{name[5:].lower()}: unknown task type '{bad}'"):
        load_settings(environ={name: value})


def test_a_misspelt_task_type_in_the_toml_file_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "capd.toml"
    path.write_text("[deadlines_s]\nRecaptchaV2TaskProxyles = 60\n")
    with pytest.raises(ConfigError, match="RecaptchaV2TaskProxyles"):
        load_settings(path, environ={})


@pytest.mark.parametrize("name", [
    "CAPD_RESULT_TTL_S", "CAPD_BAN_DURATION_S", "CAPD_PROXY_CHECK_TIMEOUT_S",
    "CAPD_MAX_POLLS_PER_TASK", "CAPD_DEFAULT_PRICE_PER_1000", "CAPD_DEMO_BALANCE"])
@pytest.mark.parametrize("value", ["inf", "-inf", "Infinity", "nan", "NaN", "-1", "-0.5"])
def test_non_finite_or_negative_numbers_are_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=name[5:].lower()):
        load_settings(environ={name: value})


@pytest.mark.parametrize(("name", "value"), [
    ("CAPD_PRICES", "RecaptchaV2Task=Infinity"), ("CAPD_PRICES", "RecaptchaV2Task=NaN"),
    ("CAPD_PRICES", "RecaptchaV2Task=-0.1"), ("CAPD_DEADLINES_S", "TurnstileTask=inf"),
    ("CAPD_DEADLINES_S", "TurnstileTask=nan"), ("CAPD_DEADLINES_S", "TurnstileTask=-5"),
    ("CAPD_QUEUE_DEPTH_LIMITS", "TurnstileTask=-1"),
    ("CAPD_QUEUE_DEPTH_LIMITS", "TurnstileTask=inf"),
])
def test_non_finite_or_negative_mapping_values_are_refused(name: str, value: str) -> None:
    with pytest.raises(ConfigError, match=f"{name[5:].lower()}: cannot use"):
        load_settings(environ={name: value})


@pytest.mark.parametrize("toml", [
    "result_ttl_s = inf\n", "result_ttl_s = nan\n", "ban_duration_s = -inf\n",
    "[prices]\nTurnstileTask = inf\n", "[deadlines_s]\nTurnstileTask = nan\n",
])
def test_toml_non_finite_numbers_are_refused(tmp_path: Path, toml: str) -> None:
    path = tmp_path / "capd.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError, match="cannot use"):
        load_settings(path, environ={})


def test_zero_and_known_types_are_accepted() -> None:
    s = load_settings(environ={"CAPD_PRICES": "TurnstileTask=0", "CAPD_RESULT_TTL_S": "0",
                               "CAPD_QUEUE_DEPTH_LIMITS": "ImageToTextTask=0"})
    assert s.price_per_1000("TurnstileTask") == Decimal(0)
    assert s.result_ttl_s == 0 and s.depth_limit("ImageToTextTask") == 0
