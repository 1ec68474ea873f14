"""createTask validation (spec §5) and the image rules, pure: no DNS, no store.

The checks come in the spec's order as separate steps; between them the service asks
the outbound guard about the proxy and callback hosts and the store about banned
proxies, so the first failure answers exactly as the spec orders it.
"""

from __future__ import annotations

import base64
import binascii
import re
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import urlsplit

import orjson

from capd.constants import MAX_TASK_DEPTH, MAX_TASK_FIELDS_BYTES, MAX_UNKNOWN_FIELDS
from capd.domain.catalogue import (
    PROXY_FIELDS,
    PROXY_TYPES,
    RECAPTCHA_SITEKEY_LEN,
    TASK_TYPES,
    FieldSpec,
    TaskType,
)
from capd.domain.hosts import normalise_host
from capd.domain.hosts import url_host as normal_url_host
from capd.domain.keys import KeyOptions
from capd.errors import BadParameter, CapdError

_SITEKEY_RE = re.compile(rf"[A-Za-z0-9_-]{{{RECAPTCHA_SITEKEY_LEN}}}")
_DATA_URI_RE = re.compile(r"^\s*data:[^,]{0,200};base64,", re.IGNORECASE)
_UA_BROWSERS = (
    ("Edg", re.compile(r"\bEdg(?:e|A|iOS)?/(\d+)")),
    ("Firefox", re.compile(r"\b(?:Firefox|FxiOS)/(\d+)")),
    ("Chrome", re.compile(r"\b(?:Chrome|CriOS)/(\d+)")),
    ("Safari", re.compile(r"\bVersion/(\d+)(?:\.\d+)*.*\bSafari/")),
)


@dataclass(frozen=True)
class ImageSpec:
    """What the built-in recogniser needs to read one ImageToText task."""

    module: str = "universal"
    threshold: int | None = None  # percent; None means no threshold
    case_sensitive: bool = True
    numeric: int = 0  # 0 any, 1 digits only, 2 no digits
    math: bool = False
    min_length: int = 0  # the answer's length bounds (anti-captcha minLength/maxLength,
    max_length: int = 0  # 2captcha min_len/max_len); 0: no bound


@dataclass(frozen=True)
class ValidatedTask:
    type: TaskType
    fields: dict[str, Any]  # the task object as sent, less the fields its type does not take
    website_host: str | None = None
    proxy: tuple[str, str, int] | None = None  # (type, normalised address, port)
    images: list[bytes] = field(default_factory=list)
    image_spec: ImageSpec | None = None
    callback_url: str | None = None


@dataclass(frozen=True)
class ValidationRules:
    """The operator's settings the validator needs."""

    min_image_bytes: int
    max_image_bytes: int
    min_browser_major: int
    min_safari_major: int


def _get(task: dict[str, Any], name: str) -> tuple[bool, Any]:
    """Field by its documented name, else by the capitalised spelling some clients send."""
    if name in task:
        return True, task[name]
    alt = name[0].upper() + name[1:]
    if alt in task:
        return True, task[alt]
    return False, None


def _check_kind(name: str, spec: FieldSpec, value: Any) -> Any:
    kind = spec.kind
    if kind == "str":
        if not isinstance(value, str):
            raise BadParameter(name, "not a string")
        if spec.choices is not None and value not in spec.choices:
            raise BadParameter(name, f"not one of {sorted(spec.choices)}")
        return value
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, int) and value in (0, 1):  # PHP-style clients send 0/1
            return bool(value)
        raise BadParameter(name, "not a boolean")
    if kind in ("int", "num"):
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise BadParameter(name, "not a number")
        if kind == "int" and isinstance(value, float):
            if not value.is_integer():
                raise BadParameter(name, "not an integer")
            value = int(value)
        if value != value or (spec.low is not None and value < spec.low) or (
                spec.high is not None and value > spec.high):
            raise BadParameter(name, f"outside {spec.low:g}-{spec.high:g}")
        return value
    if kind == "list":
        if not isinstance(value, list):
            raise BadParameter(name, "not a list")
        return value
    if kind == "obj":
        if not isinstance(value, dict):
            raise BadParameter(name, "not an object")
        return value
    raise AssertionError(kind)


def decode_image(raw: Any, rules: ValidationRules, name: str = "body") -> bytes:
    """Base64 (optionally a data: URI, line breaks allowed) to bytes, size-checked (§5.5)."""
    if raw is None or raw == "":
        raise CapdError("ERROR_ZERO_CAPTCHA_FILESIZE", f"'{name}' is empty")
    if not isinstance(raw, str):
        raise BadParameter(name, "not a string")
    text = _DATA_URI_RE.sub("", raw, count=1)
    text = "".join(text.split())
    # 4/3 of the decoded limit, plus padding: anything longer cannot fit (saves decoding)
    if len(text) > (rules.max_image_bytes * 4) // 3 + 4:
        raise CapdError("ERROR_TOO_BIG_CAPTCHA_FILESIZE")
    text += "=" * (-len(text) % 4)
    try:
        data = base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        try:
            data = base64.b64decode(text.replace("-", "+").replace("_", "/"), validate=True)
        except (binascii.Error, ValueError):
            raise CapdError("ERROR_ZERO_CAPTCHA_FILESIZE", "not valid base64") from None
    if len(data) < rules.min_image_bytes:
        raise CapdError("ERROR_ZERO_CAPTCHA_FILESIZE")
    if len(data) > rules.max_image_bytes:
        raise CapdError("ERROR_TOO_BIG_CAPTCHA_FILESIZE")
    return data


def url_host(url: Any) -> str | None:
    """Host of an absolute http(s) URL, lower-cased, as written; None when it is not one.
    Only tells whether ``url`` is an http(s) URL: compare hosts with
    ``capd.domain.hosts.url_host``, which normalises them."""
    if not isinstance(url, str) or len(url) > 4096:
        return None
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a malformed port
    except ValueError:
        return None
    if parts.scheme.lower() not in ("http", "https") or not host:
        return None
    return host.rstrip(".").lower() or None


def check_user_agent(ua: str, rules: ValidationRules) -> None:
    """A plausible, current browser user agent, else ERROR_WRONG_USERAGENT."""
    if not ua.startswith("Mozilla/5.0 (") or len(ua) > 1024:
        raise CapdError("ERROR_WRONG_USERAGENT", "not a browser user agent")
    for browser, pattern in _UA_BROWSERS:
        m = pattern.search(ua)
        if m:
            minimum = rules.min_safari_major if browser == "Safari" else rules.min_browser_major
            if int(m.group(1)) < minimum:
                raise CapdError("ERROR_WRONG_USERAGENT",
                                f"{browser} {m.group(1)} is older than {minimum}")
            return
    raise CapdError("ERROR_WRONG_USERAGENT", "no known browser version in userAgent")


def _image_spec(fields: dict[str, Any], key: KeyOptions, task: dict[str, Any]) -> ImageSpec:
    """The recogniser's options: the validated fields, and from the task as sent the
    length hints that the validation does not know (answer_lengths)."""
    _, module = _get(fields, "capMonsterModule")
    _, threshold = _get(fields, "recognizingThreshold")
    _, case = _get(fields, "case")
    _, numeric = _get(fields, "numeric")
    _, math = _get(fields, "math")
    module = (module or key.module or "universal").lower()
    shortest, longest = answer_lengths(task)
    return ImageSpec(
        module=module,
        threshold=int(threshold) if threshold is not None else key.recognizing_threshold,
        case_sensitive=True if case is None else bool(case),
        numeric=int(numeric or 0),
        math=bool(math) or module == "captcha_math",
        min_length=shortest,
        max_length=longest,
    )


def spec_options(spec: ImageSpec) -> dict[str, Any]:
    """An ImageSpec as stored with its task and handed to workers (``imageOptions``):
    the length bounds only when set, so that a task without them reads the same to a
    worker of a version before them."""
    options = asdict(spec)
    for name in ("min_length", "max_length"):
        if not options[name]:
            del options[name]
    return options


# the longest answer a length bound may name (2captcha's max_len goes up to 20)
MAX_ANSWER_LENGTH = 20


def answer_lengths(fields: dict[str, Any]) -> tuple[int, int]:
    """anti-captcha's optional minLength / maxLength of an ImageToText answer, as hints
    for the recogniser: an integer from 1 to MAX_ANSWER_LENGTH counts, anything else
    (0 included: "no requirement") is ignored, never refused, as CapMonster's API, which
    does not have these fields, ignores them; bounds that contradict each other are
    both ignored."""
    bounds = []
    for name in ("minLength", "maxLength"):
        _, value = _get(fields, name)
        ok = isinstance(value, int) and not isinstance(value, bool)
        bounds.append(value if ok and 1 <= value <= MAX_ANSWER_LENGTH else 0)
    shortest, longest = bounds
    if shortest and longest and shortest > longest:
        return 0, 0
    return shortest, longest


# task types whose images capd's own recogniser reads: at createTask they must decode as
# a picture (``capd.domain.images.check_image``), else ERROR_ZERO_CAPTCHA_FILESIZE; the
# images of other types go to workers as sent
READ_IMAGE_TYPES = frozenset({"ImageToTextTask"})

# fields whose size the image rules bound (spec §5.5), not MAX_TASK_FIELDS_BYTES
IMAGE_FIELDS = frozenset({"body", "imagesBase64"})


def nesting_depth(value: Any, limit: int) -> int:
    """Nesting levels of a JSON value (a scalar is 0), counted without recursion and
    only up to ``limit + 1``."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, level = stack.pop()
        if isinstance(item, dict | list):
            level += 1
            deepest = max(deepest, level)
            if deepest > limit:
                return deepest
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, level) for child in children)
    return deepest


def kept_field_names(task: dict[str, Any], ttype: TaskType) -> list[str]:
    """The names, as sent, of the task's fields that capd stores and hands to a worker:
    ``type``, the type's own fields (either spelling) and the proxy's."""
    known = {"type", *PROXY_FIELDS}
    for name in ttype.fields:
        known.add(name)
        known.add(name[0].upper() + name[1:])
    return [name for name in task if name in known]


def check_bounds(task: dict[str, Any], ttype: TaskType) -> None:
    """A task object within the bounds (ERROR_BAD_PARAMETERS naming the field): at most
    MAX_UNKNOWN_FIELDS fields the type does not take, no field nested deeper than
    MAX_TASK_DEPTH, and the fields other than the images at most MAX_TASK_FIELDS_BYTES
    in all once serialised."""
    kept = set(kept_field_names(task, ttype))
    unknown = [name for name in task if name not in kept]
    if len(unknown) > MAX_UNKNOWN_FIELDS:
        raise BadParameter("task", f"carrying more than {MAX_UNKNOWN_FIELDS} fields its type "
                           "does not take")
    total = 0
    for name, value in task.items():
        if nesting_depth(value, MAX_TASK_DEPTH) > MAX_TASK_DEPTH:
            raise BadParameter(_field_label(name), f"nested deeper than {MAX_TASK_DEPTH} levels")
        if name in IMAGE_FIELDS:
            continue
        total += len(name) + len(orjson.dumps(value))
        if total > MAX_TASK_FIELDS_BYTES:
            raise BadParameter(_field_label(name), "past the size limit of "
                               f"{MAX_TASK_FIELDS_BYTES} bytes for a task's fields")


def _field_label(name: str) -> str:
    return name if len(name) <= 64 else name[:64] + "..."


@dataclass(frozen=True)
class TaskDraft:
    """A task object past the checks that need nothing outside it (spec §5 steps 3-4, up
    to the proxy's fields): what the address checks and the remaining steps start from."""

    type: TaskType
    fields: dict[str, Any]  # the type's fields, checked and converted
    website_host: str | None = None
    proxy: tuple[str, str, int] | None = None  # (type, address, port)


def check_task(task: dict[str, Any]) -> TaskDraft:
    """Spec §5 steps 3-4 up to the proxy: type, each field's kind and range, the type's
    own rules, websiteURL, the sitekey, and a complete proxy when one is needed or given.
    Raises the first failure's CapdError."""
    type_name = task.get("type")
    ttype = TASK_TYPES.get(type_name) if isinstance(type_name, str) else None
    if ttype is None:
        raise CapdError("ERROR_TASK_NOT_SUPPORTED", f"type {str(task.get('type'))[:64]!r}")
    check_bounds(task, ttype)

    fields: dict[str, Any] = {}
    for name, spec in ttype.fields.items():
        present, value = _get(task, name)
        if not present or value is None:
            if spec.required:
                raise BadParameter(name, "missing")
            continue
        fields[name] = _check_kind(name, spec, value)
        if spec.required and spec.kind == "str" and not value.strip():
            raise BadParameter(name, "empty")
    _check_type_specifics(ttype, fields)

    host = None
    if "websiteURL" in fields:
        if url_host(fields["websiteURL"]) is None:
            raise CapdError("ERROR_RECAPTCHA_INVALID_DOMAIN", "websiteURL must be http(s)://host")
        host = normal_url_host(fields["websiteURL"])
        if host is None:
            raise BadParameter("websiteURL", "naming no valid host")
    if ttype.recaptcha_family and "websiteKey" in fields and not _SITEKEY_RE.fullmatch(
            fields["websiteKey"]):
        raise CapdError("ERROR_RECAPTCHA_INVALID_SITEKEY")
    return TaskDraft(ttype, fields, host, _check_proxy(task, ttype, fields))


TARGET_URL_FIELDS = ("websiteURL", "apiJsUrl")  # single URLs a worker may open
TARGET_URL_LISTS = ("imageUrls",)  # lists of them


def target_urls(draft: TaskDraft) -> list[tuple[str, str]]:
    """(field name, URL) of each URL in the task that a worker is handed to open."""
    out = [(name, draft.fields[name]) for name in TARGET_URL_FIELDS if name in draft.fields]
    for name in TARGET_URL_LISTS:
        for i, url in enumerate(draft.fields.get(name) or []):
            out.append((f"{name}[{i}]", url))
    return out


def check_browser(draft: TaskDraft, rules: ValidationRules) -> None:
    """The task's userAgent, when given, is a current browser's (ERROR_WRONG_USERAGENT)."""
    if "userAgent" in draft.fields:
        check_user_agent(draft.fields["userAgent"], rules)


def callback_refused() -> BadParameter:
    """The error for a callbackUrl that is not http(s) or names an internal host."""
    return BadParameter("callbackUrl", "not an http(s) URL of a public host")


def callback_host(callback_url: object) -> str | None:
    """The normalised host of a given callbackUrl (None when none is given); raises when it
    is not an http(s) URL of a valid host. Whether the host is public is the outbound
    guard's question."""
    if callback_url is None:
        return None
    host = normal_url_host(callback_url) if isinstance(callback_url, str) else None
    if host is None:
        raise callback_refused()
    return host


def complete_task(draft: TaskDraft, task: dict[str, Any], key: KeyOptions,
                  callback_url: str | None, rules: ValidationRules) -> ValidatedTask:
    """Spec §5 step 5: decode and size-check the images; the validated task."""
    images: list[bytes] = []
    image_spec = None
    if draft.type.name == "ImageToTextTask":
        _, body = _get(task, "body")
        images.append(decode_image(body, rules))
        image_spec = _image_spec(draft.fields, key, task)
    elif draft.type.name == "ComplexImageTask":
        for i, item in enumerate(draft.fields.get("imagesBase64") or []):
            images.append(decode_image(item, rules, f"imagesBase64[{i}]"))
    stored = {name: task[name] for name in kept_field_names(task, draft.type)}
    return ValidatedTask(draft.type, stored, draft.website_host, draft.proxy, images,
                         image_spec, callback_url)


def _check_type_specifics(ttype: TaskType, fields: dict[str, Any]) -> None:
    if ttype.name.startswith("GeeTestTask"):
        if fields.get("version", 3) == 3 and "challenge" not in fields:
            raise BadParameter("challenge", "missing (required for GeeTest v3)")
    elif ttype.name == "ComplexImageTask":
        images = fields.get("imagesBase64") or fields.get("imageUrls")
        if not images:
            raise BadParameter("imagesBase64", "missing (or imageUrls)")
        for i, item in enumerate(images):
            if not isinstance(item, str):
                raise BadParameter(f"images[{i}]", "not a string")
    elif ttype.name.startswith("TurnstileTask"):
        variant = fields.get("cloudflareTaskType")
        if variant is not None and variant not in ("cf_clearance", "token"):
            raise BadParameter("cloudflareTaskType", "not one of cf_clearance, token")
        if variant is not None and "userAgent" not in fields:
            raise BadParameter("userAgent", "missing (required by cloudflareTaskType)")
        if variant == "cf_clearance" and "htmlPageBase64" not in fields:
            raise BadParameter("htmlPageBase64", "missing (required by cf_clearance)")


def _check_proxy(task: dict[str, Any], ttype: TaskType, fields: dict[str, Any]
                 ) -> tuple[str, str, int] | None:
    given = {n: v for n in PROXY_FIELDS for ok, v in [_get(task, n)] if ok and v not in (None, "")}
    cf_clearance = fields.get("cloudflareTaskType") == "cf_clearance"
    needs = ttype.requires_proxy or cf_clearance
    if not given and not needs:
        return None
    ptype = given.get("proxyType")
    address = given.get("proxyAddress")
    port = given.get("proxyPort")
    if isinstance(port, str) and port.isascii() and port.isdigit():
        port = int(port)
    if (not isinstance(ptype, str) or ptype.lower() not in PROXY_TYPES
            or not isinstance(address, str) or not address.strip() or len(address) > 255
            or isinstance(port, bool) or not isinstance(port, int) or not 1 <= port <= 65535):
        raise CapdError("ERROR_PROXY_MISSING")
    for opt in ("proxyLogin", "proxyPassword"):
        if opt in given and not isinstance(given[opt], str):
            raise BadParameter(opt, "not a string")
    normal = normalise_host(address.strip())
    if normal is None:
        raise BadParameter("proxyAddress", "not a valid host name or IP address")
    return (ptype.lower(), normal, port)
