"""clientKey and the options that ride on it (spec §3)."""

from __future__ import annotations

import re
import secrets
from dataclasses import dataclass
from functools import lru_cache

_KEY_RE = re.compile(r"[0-9a-f]{32}")
_THRESHOLD_PREFIX = "recognizingthreshold_"


@dataclass(frozen=True)
class KeyOptions:
    """A clientKey split into the bare 32-hex key and its ``__`` options."""

    key: str
    module: str | None = None
    recognizing_threshold: int | None = None
    nocache: bool = False


def new_key() -> str:
    """A fresh 32-character lowercase hex API key."""
    return secrets.token_hex(16)


def is_key(text: object) -> bool:
    return isinstance(text, str) and _KEY_RE.fullmatch(text) is not None


def parse_client_key(raw: object) -> KeyOptions | None:
    """Parse ``KEY[__opt...]``; None when the bare key is malformed.

    Options in any order: ``__nocache``, ``__recognizingthreshold_<0-100>``, and any other
    word as the module name. A malformed threshold makes the whole key malformed, as an
    unrecognisable key would be.
    """
    if not isinstance(raw, str):
        return None
    return _parse_key_text(raw)


@lru_cache(maxsize=4096)  # the poll path parses the same few keys over and over
def _parse_key_text(raw: str) -> KeyOptions | None:
    key, *opts = raw.split("__")
    if not is_key(key):
        return None
    module: str | None = None
    threshold: int | None = None
    nocache = False
    for opt in opts:
        word = opt.lower()
        if word == "nocache":
            nocache = True
        elif word.startswith(_THRESHOLD_PREFIX):
            value = word[len(_THRESHOLD_PREFIX):]
            if not (value.isascii() and value.isdigit()) or int(value) > 100:
                return None
            threshold = int(value)
        elif word and re.fullmatch(r"[a-z0-9_\-]{1,64}", word):
            module = word
        else:
            return None
    return KeyOptions(key, module, threshold, nocache)
