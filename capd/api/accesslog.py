"""The access log: one line per HTTP request, off unless the ``access_log`` setting is on.

A line holds the time (UTC), the client address (as ClientAddressMiddleware resolved it),
method, path, status and duration in milliseconds, and nothing else: never a body, a query
string or a header, because they carry API keys (2captcha's in.php/res.php take ``key`` in
the query), worker tokens and images. A long hex run in the path, where a client might put
a key by mistake, is masked as well.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Callable
from functools import lru_cache
from urllib.parse import quote

from starlette.middleware import Middleware
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from capd.api.middleware import CLIENT_IP

LOGGER_NAME = "capd.access"
MAX_PATH_CHARS = 200  # a path longer than this is cut: a log line stays one short line
_HEX_RUN = re.compile(r"[0-9a-fA-F]{32,}")  # a client key is 32 hex, a worker token 48
_PATH_SAFE = "/:@!$&'()*+,;=-._~"


def access_log_middleware(enabled: bool) -> list[Middleware]:
    """The middleware entry for the app's list: empty when the log is off (no cost)."""
    return [Middleware(AccessLogMiddleware)] if enabled else []


def _default_logger() -> logging.Logger:
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.INFO)
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("%(message)s"))
        logger.addHandler(handler)
        logger.propagate = False  # one line, not a second copy through the root logger
    return logger


@lru_cache(maxsize=1024)  # a server sees a handful of paths; each is worked out once
def log_path(path: str) -> str:
    """The request path as it may be logged: percent-encoded (no control characters or
    spaces), cut to MAX_PATH_CHARS, hex runs that could be keys masked."""
    text = quote(path, safe=_PATH_SAFE)[:MAX_PATH_CHARS]
    return _HEX_RUN.sub("<masked>", text)


@lru_cache(maxsize=4)
def _utc_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def _utc(ts: float) -> str:
    return f"{_utc_second(int(ts))}.{int(ts % 1 * 1000):03d}Z"


class AccessLogMiddleware:
    """Logs each HTTP request once, just before its last response byte is sent."""

    def __init__(self, app: ASGIApp, logger: logging.Logger | None = None,
                 clock: Callable[[], float] = time.time,
                 timer: Callable[[], float] = time.perf_counter) -> None:
        self.app = app
        self.logger = logger or _default_logger()
        self.clock = clock
        self.timer = timer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started_at, started = self.clock(), self.timer()
        status = 500  # what the server answers when the app fails before responding
        logged = False

        def log() -> None:
            nonlocal logged
            logged = True
            peer = scope.get("client")
            client = scope.get(CLIENT_IP) or (peer[0] if peer else "-")
            self.logger.info("%s %s %s %s %d %.1fms", _utc(started_at), client,
                             scope["method"], log_path(scope["path"]), status,
                             (self.timer() - started) * 1000)

        async def logging_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            elif (message["type"] == "http.response.body" and not message.get("more_body")
                    and not logged):
                log()  # before the last byte: a client that has the answer finds the line
            await send(message)

        try:
            await self.app(scope, receive, logging_send)
        finally:
            if not logged:
                log()
