"""Cross-cutting policies as small ASGI middleware: client address and body limit."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from functools import lru_cache

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

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


class ClientAddressMiddleware:
    """Puts the caller's address in ``scope[CLIENT_IP]`` (spec §4).

    The socket peer, unless the peer is a trusted proxy: then the right-most
    ``X-Forwarded-For`` entry that is not itself a trusted proxy.
    """

    def __init__(self, app: ASGIApp, trusted_proxies: Iterable[Network] = ()) -> None:
        self.app = app
        self.trusted = tuple(trusted_proxies)
        for net in self.trusted:
            if not isinstance(net, ipaddress.IPv4Network | ipaddress.IPv6Network):
                raise TypeError("trusted_proxies must hold ip_network objects")

    def _is_trusted(self, addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
        return any(addr in net for net in self.trusted if net.version == addr.version)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            peer = scope.get("client")
            peer_text = peer[0] if peer else "0.0.0.0"
            addr = _addr(peer_text)
            client = str(addr) if addr is not None else peer_text
            if addr is not None and self.trusted and self._is_trusted(addr):
                forwarded: list[str] = []
                for name, value in scope["headers"]:
                    if name == b"x-forwarded-for":
                        forwarded.extend(value.decode("latin-1").split(","))
                for entry in reversed(forwarded):
                    hop = _addr(entry)
                    if hop is None:
                        break
                    client = str(hop)
                    if not self._is_trusted(hop):
                        break
            scope[CLIENT_IP] = client
        await self.app(scope, receive, send)


class BodyLimitMiddleware:
    """Refuses bodies over the limit before they are read (spec §1).

    A declared Content-Length over the limit is answered at once; a body without one is
    counted as it streams (``BodyTooLarge`` raised to the reader).
    """

    def __init__(self, app: ASGIApp, max_bytes: int, create_paths: Iterable[str],
                 text_paths: Iterable[str] = ()) -> None:
        self.app = app
        self.max_bytes = max_bytes
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
            await self._refuse(scope, send)
            return
        seen = 0

        async def counting_receive() -> Message:
            nonlocal seen
            message = await receive()
            if message["type"] == "http.request":
                seen += len(message.get("body", b""))
                if seen > self.max_bytes:
                    raise BodyTooLarge()
            return message

        await self.app(scope, counting_receive, send)

    async def _refuse(self, scope: Scope, send: Send) -> None:
        if scope["path"].rstrip("/") in self.text_paths:
            text = b"ERROR_TOO_BIG_CAPTCHA_FILESIZE"
            await send({"type": "http.response.start", "status": 200,
                        "headers": [(b"content-type", b"text/plain; charset=utf-8"),
                                    (b"content-length", str(len(text)).encode()),
                                    (b"connection", b"close")]})
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
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})


class BodyTooLarge(Exception):
    """Raised when a streamed request body passes the size limit."""
