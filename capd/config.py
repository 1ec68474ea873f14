"""One typed Settings object, read once at start-up from TOML and ``CAPD_*`` variables.

Precedence: environment over TOML file over the defaults below. Every field can be
set as ``CAPD_<FIELD_NAME_UPPER>``; mappings (``prices``, ``deadlines_s``,
``queue_depth_limits``) as ``Name=value,Name=value``; lists as comma-separated values.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import math
import os
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar

from capd import constants as C
from capd.domain.catalogue import TASK_TYPES
from capd.errors import ConfigError

DEFAULT_DB_FILE = "capd.db"

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@dataclass(frozen=True)
class Settings:
    database_url: str = f"sqlite:///{DEFAULT_DB_FILE}"
    # money: USD per 1,000 solved tasks; types not listed use default_price_per_1000
    default_price_per_1000: Decimal = C.DEFAULT_PRICE_PER_1000
    prices: Mapping[str, Decimal] = field(default_factory=dict)
    # tasks
    result_ttl_s: float = C.RESULT_TTL_S
    max_polls_per_task: int = C.MAX_POLLS_PER_TASK
    max_polls_per_s: int = C.MAX_POLLS_PER_S
    report_window_s: float = C.REPORT_WINDOW_S
    image_deadline_s: float = C.IMAGE_DEADLINE_S
    worker_deadline_s: float = C.WORKER_DEADLINE_S
    deadlines_s: Mapping[str, float] = field(default_factory=dict)
    queue_depth_limit: int = C.QUEUE_DEPTH_LIMIT
    queue_depth_limits: Mapping[str, int] = field(default_factory=dict)
    # bans
    ban_duration_s: float = C.BAN_DURATION_S
    unknown_key_ban_threshold: int = C.UNKNOWN_KEY_BAN_THRESHOLD
    violation_block_threshold: int = C.VIOLATION_BLOCK_THRESHOLD
    violation_window_s: float = C.VIOLATION_WINDOW_S
    # network
    trusted_proxies: tuple[Network, ...] = ()
    allow_private_proxies: bool = False
    allow_private_callbacks: bool = False
    # URLs handed to workers (websiteURL, imageUrls, apiJsUrl) may name internal hosts
    allow_private_targets: bool = False
    # images
    min_image_bytes: int = C.MIN_IMAGE_BYTES
    max_image_bytes: int = C.MAX_IMAGE_BYTES
    max_body_bytes: int = C.MAX_BODY_BYTES
    body_read_timeout_s: float = C.BODY_READ_TIMEOUT_S  # each read of a request body
    header_read_timeout_s: float = C.HEADER_READ_TIMEOUT_S  # a request's headers
    keep_alive_s: float = C.KEEP_ALIVE_S  # an idle keep-alive connection is closed after
    # userAgent
    min_browser_major: int = C.MIN_BROWSER_MAJOR
    min_safari_major: int = C.MIN_SAFARI_MAJOR
    actual_user_agent: str = C.ACTUAL_USER_AGENT
    # built-in OCR
    # capd/solving/ocr: auto, finetuned, capd-web, capd, rapidocr, ddddocr, ddddocr-beta
    ocr_engine: str = "auto"
    ocr_threads: int = 0  # 0: one per CPU core
    ocr_lease_s: float = C.OCR_LEASE_S
    builtin_ocr: bool = True  # False: ImageToText only through `capd worker` processes
    # custom recognition modules (capd/modules): the directory holding them, shared by
    # every node ("": a capd-modules folder beside the SQLite file), and how often a
    # running server or worker looks for new versions
    modules_dir: str = ""
    modules_poll_s: float = C.MODULES_POLL_S
    # keep worker-answered ImageToText tasks of a stored module as its labelled samples
    # (`capd module samples NAME --export DIR`); they follow payload_retention_s
    module_samples: bool = True
    # the human fallback: an ImageToText task the built-in reading fails (unreadable, or
    # below its recognizingThreshold) goes to the worker queue instead, while an external
    # worker serves ImageToText; it keeps its deadline (docs/modules.md)
    human_fallback: bool = False
    # worker protocol
    worker_seen_window_s: float = C.WORKER_SEEN_WINDOW_S
    worker_lease_s: float = C.WORKER_LEASE_S
    # outbound
    proxy_preflight: bool = True
    proxy_check_timeout_s: float = C.PROXY_CHECK_TIMEOUT_S
    proxy_check_cache_s: float = C.PROXY_CHECK_CACHE_S
    proxy_ban_s: float = C.PROXY_BAN_S
    proxy_checks_per_window: int = C.PROXY_CHECKS_PER_WINDOW
    proxy_check_window_s: float = C.PROXY_CHECK_WINDOW_S
    callback_timeout_s: float = C.CALLBACK_TIMEOUT_S
    callback_retries: int = C.CALLBACK_RETRIES
    callback_backoff_s: float = C.CALLBACK_BACKOFF_S
    callback_concurrency: int = C.CALLBACK_CONCURRENCY
    callback_per_account: int = C.CALLBACK_PER_ACCOUNT
    # retention: payloads of finished tasks, then the finished tasks themselves
    payload_retention_s: float = C.PAYLOAD_RETENTION_S
    task_retention_s: float = C.TASK_RETENTION_S
    # one line per request (time, client, method, path, status, ms; never a key or body)
    access_log: bool = False
    # demo account printed by `capd serve --demo`
    demo_balance: Decimal = C.DEMO_BALANCE

    def price_per_1000(self, task_type: str) -> Decimal:
        return self.prices.get(task_type, self.default_price_per_1000)

    def deadline_s(self, task_type: str, built_in: bool) -> float:
        default = self.image_deadline_s if built_in else self.worker_deadline_s
        return self.deadlines_s.get(task_type, default)

    def depth_limit(self, task_type: str) -> int:
        return self.queue_depth_limits.get(task_type, self.queue_depth_limit)

    def replace(self, **changes: Any) -> Settings:
        return load_settings(overrides={**self._as_raw(), **changes})

    def _as_raw(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}


_FIELDS = {f.name: f for f in dataclasses.fields(Settings)}
_N = TypeVar("_N", int, float, Decimal)
# mappings keyed by task type: a misspelt name would silently never apply
_TYPE_KEYED = ("prices", "deadlines_s", "queue_depth_limits")
_DEFAULT_PRICES = {
    "ImageToTextTask": C.IMAGE_PRICE_PER_1000,
}


def _cast(name: str, value: Any) -> Any:
    """Strictly cast a raw TOML/env value to the type of Settings.<name>."""
    kind = _FIELDS[name].type
    try:
        if kind == "Decimal":
            if isinstance(value, float):
                value = repr(value)
            return _finite(Decimal(str(value)))
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in ("1", "true", "yes", "on"):
                return True
            if text in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError
            return _finite(int(value))
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError
            return _finite(float(value))
        if kind == "str":
            if not isinstance(value, str):
                raise ValueError
            return value
        if kind.startswith("tuple[Network"):
            items = value.split(",") if isinstance(value, str) else list(value)
            return tuple(ipaddress.ip_network(str(i).strip(), strict=False)
                         for i in items if str(i).strip())
        if kind.startswith("Mapping["):
            inner = kind[len("Mapping[str, "):-1]
            if isinstance(value, str):
                pairs = [p.split("=", 1) for p in value.split(",") if p.strip()]
                if any(len(p) != 2 for p in pairs):
                    raise ValueError
                value = {k.strip(): v.strip() for k, v in pairs}
            if not isinstance(value, Mapping):
                raise ValueError
            converters: dict[str, Callable[[Any], Any]] = {
                "Decimal": lambda v: Decimal(repr(v) if isinstance(v, float) else str(v)),
                "float": float, "int": _whole}
            conv = converters[inner]
            out = {}
            for k, v in value.items():
                if name in _TYPE_KEYED and str(k) not in TASK_TYPES:
                    raise ConfigError(f"setting {name}: unknown task type {str(k)!r}")
                try:
                    out[str(k)] = _finite(conv(v))
                except (ValueError, TypeError, InvalidOperation):
                    raise ConfigError(f"setting {name}: cannot use {v!r} for {str(k)!r}"
                                      " (a finite number, 0 or more)") from None
            return out
    except (ValueError, TypeError, InvalidOperation):
        raise ConfigError(f"setting {name}: cannot use {value!r}") from None
    raise ConfigError(f"setting {name}: unsupported type {kind}")


def _finite(number: _N) -> _N:
    """The number itself when it is finite and not negative, else ValueError (inf, nan,
    Infinity and negatives are refused in every numeric setting)."""
    if isinstance(number, Decimal):
        if not number.is_finite() or number < 0:
            raise ValueError
    elif isinstance(number, float) and not math.isfinite(number):
        raise ValueError
    if number < 0:
        raise ValueError
    return number


def _whole(value: Any) -> int:
    if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
        raise ValueError
    return int(value)


def load_settings(
    config_path: str | os.PathLike[str] | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Any] | None = None,
) -> Settings:
    """Build Settings from defaults, then the TOML file, then ``CAPD_*``, then overrides."""
    env = os.environ if environ is None else environ
    raw: dict[str, Any] = {}
    path = config_path or env.get("CAPD_CONFIG")
    if path:
        try:
            with Path(path).open("rb") as fh:
                data = tomllib.load(fh)
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"config file {path} is not valid TOML: {exc}") from None
        if "capd" in data:
            section = data["capd"]
            if not isinstance(section, dict):
                raise ConfigError(f"config file {path}: 'capd' must be a table")
            stray = [k for k in data if k != "capd"]
            if stray:
                raise ConfigError(f"config file {path}: unknown setting {stray[0]!r}"
                                  " outside [capd]")
        else:
            section = data
        for key, value in section.items():
            if key not in _FIELDS:
                raise ConfigError(f"config file {path}: unknown setting {key!r}")
            raw[key] = value
    for name in _FIELDS:
        env_name = f"CAPD_{name.upper()}"
        if env_name in env:
            raw[name] = env[env_name]
    if "CAPD_DATABASE_URL" in env:
        raw["database_url"] = env["CAPD_DATABASE_URL"]
    if overrides:
        raw.update(overrides)
    values = {name: _cast(name, value) for name, value in raw.items()}
    prices = dict(_DEFAULT_PRICES)
    prices.update(values.pop("prices", {}))
    return Settings(prices=prices, **values)
