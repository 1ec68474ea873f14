"""Cross-cutting policies as small ASGI middleware: client address and body limit."""

from __future__ import annotations

import asyncio
import functools
import ipaddress
from collections.abc import Awaitable, Coroutine, Generator, Iterable
from functools import lru_cache
from typing import Any

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from capd.constants import BODY_READ_TIMEOUT_S, MAX_DRAIN_BYTES

CLIENT_IP = "capd.client_ip"
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


@lru_cache(maxsize=4096)
def _addr(text: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    try:
        addr = ipaddress.ip_address(text.strip().strip("[]"))
    except ValueError:
        return None
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


@lru_cache(maxsize=4096)
def _text(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> str:
    return str(addr)  # formatting an address costs more than the rest of this middleware


class ClientAddressMiddleware:
    """Puts the caller's address in ``scope[CLIENT_IP]`` (spec §4).

    The socket peer, unless the peer is a trusted proxy: then the right-most
    ``X-Forwarded-For`` entry that is not itself a trusted proxy. When that walk meets
    an entry that is not an IP address ("unknown", garbage) before an untrusted one,
    the caller cannot be known: the request is refused with ERROR_IP_NOT_ALLOWED
    rather than attributed to the proxy (which would share one address's limits and
    bans among everyone behind it, and let the proxy's own allowances through).
    """

    def __init__(self, app: ASGIApp, trusted_proxies: Iterable[Network] = ()) -> None:
        self.app = app
        self.trusted = tuple(trusted_proxies)
        for net in self.trusted:
            if not isinstance(net, ipaddress.IPv4Network | ipaddress.IPv6Network):
                raise TypeError("trusted_proxies must hold ip_network objects")

    def _is_trusted(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(addr in net for net in self.trusted if net.version == addr.version)

    def _forwarded_client(self, headers: Iterable[tuple[bytes, bytes]],
                          proxy: str) -> str | None:
        """The client behind a trusted proxy; None when X-Forwarded-For cannot name it."""
        forwarded: list[str] = []
        for name, value in headers:
            if name == b"x-forwarded-for":
                forwarded.extend(value.decode("latin-1").split(","))
        client = proxy
        for entry in reversed(forwarded):
            if not entry.strip():
                continue  # an empty list element ("a, , b") names no hop
            hop = _addr(entry)
            if hop is None:
                return None
            client = str(hop)
            if not self._is_trusted(hop):
                break
        return client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            peer = scope.get("client")
            peer_text = peer[0] if peer else "0.0.0.0"
            addr = _addr(peer_text)
            client: str | None = _text(addr) if addr is not None else peer_text
            if addr is not None and self.trusted and self._is_trusted(addr):
                client = self._forwarded_client(scope["headers"], str(addr))
            if client is None:
                await _error(scope, send, "ERROR_IP_NOT_ALLOWED",
                             "X-Forwarded-For from a trusted proxy does not name the client")
                return
            scope[CLIENT_IP] = client
        await self.app(scope, receive, send)


async def _error(scope: Scope, send: Send, code: str, description: str) -> None:
    """Answer a request refused by a middleware in its door's dialect: plain text for
    2captcha's ``*.php``, else a CapMonster-style JSON error (HTTP 200, spec §1)."""
    if scope["path"].rstrip("/").endswith(".php"):
        body, media = code.encode(), b"text/plain; charset=utf-8"
    else:
        body = orjson.dumps({"errorId": 1, "errorCode": code, "errorDescription": description})
        media = b"application/json"
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-type", media),
                            (b"content-length", str(len(body)).encode())]})
    await send({"type": "http.response.body", "body": body})


class BodyLimitMiddleware:
    """Refuses bodies over the limit without parsing them (spec §1).

    A declared Content-Length over the limit is refused without calling the app; a
    body without one is counted as it streams (``BodyTooLarge`` raised to the reader).
    Either way the body is first read and discarded up to ``drain_bytes`` in all, so
    that a client still sending it reads the refusal rather than a connection reset
    (closing a socket with unread data makes the kernel send RST, which can destroy the
    response in flight); a longer body is refused at once and the connection closed.

    Each read of the body must bring data within ``read_timeout_s``: a client that stops
    sending mid-body gets ``BodyReadTimeout`` raised to the reader (answered HTTP 408,
    connection closed) instead of holding the connection open.
    """

    def __init__(self, app: ASGIApp, max_bytes: int, create_paths: Iterable[str],
                 text_paths: Iterable[str] = (), drain_bytes: int = MAX_DRAIN_BYTES,
                 read_timeout_s: float = BODY_READ_TIMEOUT_S) -> None:
        self.app = app
        self.read_timeout_s = read_timeout_s
        self.max_bytes = max_bytes
        self.drain_bytes = max(drain_bytes, max_bytes)
        self.create_paths = frozenset(create_paths)
        self.text_paths = frozenset(text_paths)  # 2captcha's in.php answers in plain text

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        for name, value in scope["headers"]:
            if name == b"content-length":
                try:
                    declared = int(value)
                except ValueError:
                    declared = None
                break
        if declared is not None and declared > self.max_bytes:
            drained = declared <= self.drain_bytes and await self._drain(receive, 0)
            await self._refuse(scope, send, close=not drained)
            return
        seen = 0
        ended = False

        async def counting_receive() -> Message:
            nonlocal seen, ended
            if ended:  # the body is read: what follows is the disconnect, however late
                return await receive()
            message = await self._read(receive)
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                ended = not message.get("more_body", False)
                if seen > self.max_bytes:
                    if not ended:
                        await self._drain(receive, seen)
                    raise BodyTooLarge()
            return message

        await self.app(scope, counting_receive, send)

    async def _read(self, receive: Receive) -> Message:
        """One body message within the read timeout.

        The timer is started only when the read has to wait: a body that has already
        arrived (nearly every API request, sent with its headers) is taken at once, and
        the poll path does not pay for arming and cancelling a timer it never needs."""
        pending = receive()
        if not isinstance(pending, Coroutine):  # another server's awaitable: the plain way
            return await self._read_waiting(pending)
        try:
            waiting_on = pending.send(None)  # run it up to its first wait, if any
        except StopIteration as done:
            message: Message = done.value
            return message
        return await self._read_waiting(_Resume(pending, waiting_on))

    async def _read_waiting(self, pending: Awaitable[Message]) -> Message:
        try:
            async with asyncio.timeout(self.read_timeout_s):  # no task of its own
                return await pending
        except TimeoutError:
            raise BodyReadTimeout() from None

    async def _drain(self, receive: Receive, seen: int) -> bool:
        """Read and discard the rest of the body; True when it ended within drain_bytes."""
        while True:
            try:
                message = await self._read(receive)
            except BodyReadTimeout:
                return False
            if message["type"] != "http.request":
                return False  # the client has gone
            seen += len(message.get("body", b""))
            if seen > self.drain_bytes:
                return False
            if not message.get("more_body", False):
                return True

    async def _refuse(self, scope: Scope, send: Send, close: bool) -> None:
        closing = [(b"connection", b"close")] if close else []
        if scope["path"].rstrip("/") in self.text_paths:
            text = b"ERROR_TOO_BIG_CAPTCHA_FILESIZE"
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                    (b"content-length", str(len(text)).encode()),
                                    *closing]})
            await send({"type": "http.response.body", "body": text})
            return
        if scope["path"].rstrip("/") in self.create_paths:
            status, payload = 200, {"errorId": 1, "taskId": 0,
                                    "errorCode": "ERROR_TOO_BIG_CAPTCHA_FILESIZE",
                                    "errorDescription": "Request body is over the 1 MiB limit"}
        else:
            status, payload = 413, {"errorId": 1, "errorCode": "ERROR_TOO_BIG_CAPTCHA_FILESIZE",
                                    "errorDescription": "Request body is over the 1 MiB limit"}
        body = orjson.dumps(payload)
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode()),
                                *closing]})
        await send({"type": "http.response.body", "body": body})


class _Resume:
    """Awaits the rest of a coroutine already run up to its first wait (``waiting_on``,
    the future it yielded): what ``await`` would have done had it been awaited whole.
    Results are sent on and exceptions (a timeout's cancel) thrown in, step by step."""

    __slots__ = ("coro", "waiting_on")

    def __init__(self, coro: Coroutine[Any, Any, Message], waiting_on: Any) -> None:
        self.coro = coro
        self.waiting_on = waiting_on

    def __await__(self) -> Generator[Any, Any, Message]:
        coro, waiting_on = self.coro, self.waiting_on
        while True:
            try:
                sent = yield waiting_on
            except BaseException as exc:  # noqa: BLE001 - thrown on into the coroutine
                step = functools.partial(coro.throw, exc)
            else:
                step = functools.partial(coro.send, sent)
            try:
                waiting_on = step()
            except StopIteration as done:
                message: Message = done.value
                return message


class BodyTooLarge(Exception):
    """Raised when a streamed request body passes the size limit."""


class BodyReadTimeout(Exception):
    """Raised when a client sends no more of a request body within the read timeout."""
