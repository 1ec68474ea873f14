"""The one error pipeline: every failure of every front door, rendered in its dialect.

The app registers ``exception_handlers()`` once (Starlette's ``exception_handlers=``).
A front door puts its ``Dialect`` in the request scope (``use_dialect``) before it
parses anything; the handlers turn whatever was raised into a ``Failure`` and the
dialect renders it: CapMonster JSON, 2captcha text or its ``json=1`` form, the worker
protocol. Failures of requests that reached no door (unknown paths) use plain
CapMonster JSON. Every failure of a door counts in ``capd_requests_total``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Protocol

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.types import Scope

from capd.api.middleware import CLIENT_IP, BodyReadTimeout, BodyTooLarge
from capd.errors import CATALOGUE, CapdError
from capd.store.base import StoreUnavailable

log = logging.getLogger("capd.api")

DIALECT = "capd.dialect"  # scope key: the Dialect of the door serving the request

# The store cannot answer (locked or full SQLite file, PostgreSQL down or refusing
# connections): ERROR_SERVICE_UNAVAILABLE, which clients retry, not ERROR_INTERNAL.
# Each backend translates its driver's outage errors into StoreUnavailable.
STORE_UNAVAILABLE: tuple[type[BaseException], ...] = (StoreUnavailable,)


class FailureKind(StrEnum):
    REFUSED = "refused"  # a CapdError: an API outcome (HTTP 200)
    TOO_LARGE = "too_large"  # the body passed the size limit while streaming
    UNREADABLE = "unreadable"  # a form body that cannot be parsed (2captcha)
    UNAVAILABLE = "unavailable"  # the store cannot answer: HTTP 503
    INTERNAL = "internal"  # a bug: HTTP 500, logged with its traceback


_STATUS = {FailureKind.REFUSED: 200, FailureKind.TOO_LARGE: 413, FailureKind.UNREADABLE: 200,
           FailureKind.UNAVAILABLE: 503, FailureKind.INTERNAL: 500}
_OUTCOME = {FailureKind.TOO_LARGE: "body_too_large", FailureKind.UNREADABLE: "ERROR_UPLOAD",
            FailureKind.UNAVAILABLE: "ERROR_SERVICE_UNAVAILABLE",
            FailureKind.INTERNAL: "ERROR_INTERNAL"}
_CODE = {FailureKind.TOO_LARGE: "ERROR_TOO_BIG_CAPTCHA_FILESIZE",
         FailureKind.UNREADABLE: "ERROR_UPLOAD",
         FailureKind.UNAVAILABLE: "ERROR_SERVICE_UNAVAILABLE",
         FailureKind.INTERNAL: "ERROR_INTERNAL"}


@dataclass(frozen=True, slots=True)
class Failure:
    """What went wrong, before any dialect: a catalogue code (or a door's own, such as
    ERROR_UPLOAD), the HTTP status the JSON API uses for it, and the CapdError if any."""

    kind: FailureKind
    code: str
    status: int
    error: CapdError | None = None

    @property
    def outcome(self) -> str:
        """The ``outcome`` label of ``capd_requests_total``."""
        return self.error.code if self.error is not None else _OUTCOME[self.kind]

    @property
    def description(self) -> str:
        if self.error is not None:
            return self.error.description
        return CATALOGUE.get(self.code, self.code)


def failure_of(kind: FailureKind, error: CapdError | None = None) -> Failure:
    code = error.code if error is not None else _CODE[kind]
    return Failure(kind, code, _STATUS[kind], error)


class Dialect(Protocol):
    """How one front door renders failures, and the method name its metrics carry."""

    @property
    def method(self) -> str | None:
        """The ``method`` label of ``capd_requests_total`` (None: not counted)."""

    def render(self, failure: Failure) -> Response: ...


class UnreadableBody(Exception):
    """Raised when a form body (multipart or url-encoded) cannot be parsed."""


def json_response(payload: Mapping[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status, media_type="application/json")


def error_payload(code: str, description: str | None = None) -> dict[str, Any]:
    return {"errorId": 1, "errorCode": code,
            "errorDescription": description or CATALOGUE.get(code, code)}


@dataclass(frozen=True, slots=True)
class JsonDialect:
    """CapMonster / anti-captcha JSON, also the worker protocol's (spec §1, §7).

    API outcomes are HTTP 200 with ``errorId: 1``; createTask adds ``"taskId": 0`` and
    answers an oversized body with 200 too (other methods: 413). The store's outage and
    internal errors keep their 503/500 and carry the catalogue's description."""

    method: str | None = None
    create: bool = False

    def render(self, failure: Failure) -> Response:
        if failure.kind in (FailureKind.UNAVAILABLE, FailureKind.INTERNAL):
            return json_response(error_payload(failure.code), failure.status)
        if failure.kind == FailureKind.TOO_LARGE:
            payload = error_payload(failure.code)
        else:
            payload = error_payload(failure.code, failure.description)
        if self.create:
            payload["taskId"] = 0
            return json_response(payload)
        return json_response(payload, failure.status)


PLAIN_JSON = JsonDialect()


def use_dialect(scope: Scope, dialect: Dialect) -> None:
    """Declare how failures of this request are rendered (a door calls it first)."""
    scope[DIALECT] = dialect


def _render(request: Request, failure: Failure) -> Response:
    dialect: Dialect = request.scope.get(DIALECT, PLAIN_JSON)
    if dialect.method is not None:
        request.app.state.service.metrics.inc("capd_requests_total", method=dialect.method,
                                              outcome=failure.outcome)
    return dialect.render(failure)


async def refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, CapdError)
    return _render(request, failure_of(FailureKind.REFUSED, exc))


async def too_large(request: Request, exc: Exception) -> Response:
    return _render(request, failure_of(FailureKind.TOO_LARGE))


async def unreadable(request: Request, exc: Exception) -> Response:
    return _render(request, failure_of(FailureKind.UNREADABLE))


async def unavailable(request: Request, exc: Exception) -> Response:
    dialect = request.scope.get(DIALECT, PLAIN_JSON)
    log.warning("store unavailable during %s: %r", dialect.method or request.url.path, exc)
    return _render(request, failure_of(FailureKind.UNAVAILABLE))


async def internal(request: Request, exc: Exception) -> Response:
    """An unexpected exception: HTTP 500 ERROR_INTERNAL in the door's dialect.

    Starlette calls this from its outermost middleware and then re-raises the exception
    to the server, which logs it with its traceback: that is the one traceback logged,
    so this handler logs no second one."""
    return _render(request, failure_of(FailureKind.INTERNAL))


def _where(request: Request) -> str:
    dialect = request.scope.get(DIALECT, PLAIN_JSON)
    return f"{dialect.method or request.url.path} from {request.scope.get(CLIENT_IP, '?')}"


async def client_gone(request: Request, exc: Exception) -> Response:
    """The client hung up before its request was read: one log line, no traceback, no
    ERROR_INTERNAL (nobody is left to read an answer; the empty one is discarded)."""
    log.info("client disconnected during %s", _where(request))
    return Response(b"", 400, headers={"connection": "close"})


async def read_timeout(request: Request, exc: Exception) -> Response:
    """The client stopped sending its body: HTTP 408 and the connection closed."""
    log.info("request body read timed out during %s", _where(request))
    return Response(b"", 408, headers={"connection": "close"})


def exception_handlers() -> dict[Any, Any]:
    """The handlers to register once on the Starlette app."""
    handlers: dict[Any, Any] = {CapdError: refused, BodyTooLarge: too_large,
                                UnreadableBody: unreadable, ClientDisconnect: client_gone,
                                BodyReadTimeout: read_timeout, Exception: internal}
    for cls in STORE_UNAVAILABLE:
        handlers[cls] = unavailable
    return handlers
