"""Secrets at rest: what the stores keep of a secret, and what they drop when a task ends.

- API keys, worker tokens, admin tokens and console session tokens are kept only as their
  SHA-256 digest (``secret_digest``): a stolen database or backup authenticates nobody.
  A secret is shown once, when it is made; a lookup hashes what is presented. An API key
  also keeps a hint, its first ``KEY_HINT_CHARS`` characters (16 of its 128 random bits),
  so that ``capd account show`` and the console can tell an account's keys apart.
- A task's proxy login and password (``PROXY_SECRET_FIELDS`` of its payload) and any
  user:password in its callback URL are removed from the task row in the transaction that
  finishes it; an outbox row keeps the callback URL as given until the callback is
  settled (delivered or given up), then loses the credentials too.
- A new SQLite database file is created owner-only (``PRIVATE_FILE_MODE``); SQLite gives
  its -wal and -shm files the database file's mode.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from capd.constants import KEY_HINT_CHARS

PROXY_SECRET_FIELDS = ("proxyLogin", "proxyPassword")
PRIVATE_FILE_MODE = 0o600
SQLITE_DIGEST_FUNCTION = "capd_sha256"  # for migration 0006 (SQLite has no sha256())
SQLITE_STRIP_URL_FUNCTION = "capd_url_without_userinfo"


def secret_digest(secret: str) -> str:
    """The SHA-256 digest (64 lowercase hex characters) a store keeps of a secret."""
    return hashlib.sha256(secret.encode()).hexdigest()


def key_hint(key: str) -> str:
    """The non-secret part of an API key a store keeps beside its digest."""
    return key[:KEY_HINT_CHARS]


def has_proxy_secrets(payload: dict[str, Any]) -> bool:
    """Whether a task object carries proxy credentials to drop when the task ends."""
    return any(field in payload for field in PROXY_SECRET_FIELDS)


def without_proxy_secrets(payload: dict[str, Any]) -> dict[str, Any]:
    """The task object less its proxy login and password."""
    return {k: v for k, v in payload.items() if k not in PROXY_SECRET_FIELDS}


def without_userinfo(url: str | None) -> str | None:
    """The URL less any ``user:password@`` before its host; otherwise unchanged."""
    if url is None or "@" not in url:
        return url
    try:
        parts = urlsplit(url)
    except ValueError:
        return url.rsplit("@", 1)[-1]  # unparsable: keep nothing before the last '@'
    if "@" not in parts.netloc:
        return url
    return urlunsplit(parts._replace(netloc=parts.netloc.rsplit("@", 1)[1]))


def register_sqlite_functions(db: sqlite3.Connection) -> None:
    """The SQL functions SQLite migrations use: ``capd_sha256(text)`` (``secret_digest``)
    and ``capd_url_without_userinfo(text)``; both deterministic, NULL for NULL."""
    db.create_function(SQLITE_DIGEST_FUNCTION, 1,
                       lambda text: None if text is None else secret_digest(str(text)),
                       deterministic=True)
    db.create_function(SQLITE_STRIP_URL_FUNCTION, 1,
                       lambda text: None if text is None else without_userinfo(str(text)),
                       deterministic=True)


def create_private_file(path: str) -> None:
    """Create ``path`` empty and owner-only (0600, whatever the umask) unless it exists;
    an existing file keeps its mode. ``:memory:`` and SQLite URIs are left alone."""
    if path == ":memory:" or path.startswith("file:") or not path:
        return
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, PRIVATE_FILE_MODE)
    except FileExistsError:
        return
    except OSError:
        return  # sqlite3.connect reports the real problem (missing folder, no permission)
    try:
        with contextlib.suppress(OSError):
            os.fchmod(fd, PRIVATE_FILE_MODE)
    finally:
        os.close(fd)
