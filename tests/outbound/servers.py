"""Little real servers on 127.0.0.1 for the outbound tests: HTTP receivers and fake proxies."""

from __future__ import annotations

import asyncio
import base64
import ssl
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field
from types import TracebackType

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


class TcpServer:
    """Runs ``handle`` per connection on a loopback port; counts connections; on exit
    closes every connection still open (so no socket outlives the test)."""

    def __init__(self, handle: Handler, tls: ssl.SSLContext | None = None) -> None:
        self._handle = handle
        self._tls = tls
        self._tasks: set[asyncio.Task[None]] = set()
        self._server: asyncio.Server | None = None
        self.connections = 0
        self.port = 0

    async def __aenter__(self) -> TcpServer:
        self._server = await asyncio.start_server(self._on_connection, "127.0.0.1", 0,
                                                  ssl=self._tls)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        tb: TracebackType | None) -> None:
        assert self._server is not None
        self._server.close()
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self._server.wait_closed()

    async def _on_connection(self, reader: asyncio.StreamReader,
                             writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        except asyncio.CancelledError:
            pass  # closed by __aexit__; ending normally keeps 3.11's stream callback quiet
        finally:
            self._tasks.discard(task)
            writer.close()
            with suppress(ConnectionError, ssl.SSLError):
                await writer.wait_closed()


@dataclass
class Request:
    method: str
    target: str
    headers: dict[str, str]
    body: bytes


async def read_head(reader: asyncio.StreamReader) -> tuple[str, dict[str, str]]:
    head = (await reader.readuntil(b"\r\n\r\n")).decode("latin-1")
    first, *lines = head.split("\r\n")
    headers = {}
    for line in lines:
        if line:
            name, value = line.split(":", 1)
            headers[name.strip().lower()] = value.strip()
    return first, headers


@dataclass
class Receiver:
    """An HTTP/1.1 callback receiver answering ``statuses`` in turn (the last one repeats);
    ``hang`` keeps every request waiting forever."""

    statuses: list[int] = field(default_factory=lambda: [200])
    hang: bool = False
    requests: list[Request] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first, headers = await read_head(reader)
        method, target, _ = first.split(" ", 2)
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.requests.append(Request(method, target, headers, body))
        self.arrived.set()
        if self.hang:
            await asyncio.Event().wait()
        status = self.statuses.pop(0) if len(self.statuses) > 1 else self.statuses[0]
        writer.write(f"HTTP/1.1 {status} X\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                     .encode())
        await writer.drain()


@dataclass
class HttpProxy:
    """An HTTP proxy that wants Basic ``login:password`` (when given) and answers CONNECT
    with 200 or 407; it records each request head and never connects anywhere."""

    login: str | None = None
    password: str | None = None
    heads: list[tuple[str, dict[str, str]]] = field(default_factory=list)

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        first, headers = await read_head(reader)
        self.heads.append((first, headers))
        wanted = None
        if self.login is not None:
            token = base64.b64encode(f"{self.login}:{self.password}".encode()).decode()
            wanted = f"Basic {token}"
        if wanted is not None and headers.get("proxy-authorization") != wanted:
            writer.write(b"HTTP/1.1 407 Proxy Authentication Required\r\n"
                         b"Proxy-Authenticate: Basic realm=\"test\"\r\n\r\n")
        else:
            writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        await writer.drain()
        await reader.read()  # until the checker closes


@dataclass
class Socks5Proxy:
    """A SOCKS5 proxy that only takes user/pass ``login``/``password`` (RFC 1928/1929);
    ``after_auth`` collects whatever the client sends after the login (it should be nothing)."""

    login: str = "u"
    password: str = "p"
    after_auth: list[bytes] = field(default_factory=list)

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, count = await reader.readexactly(2)
        methods = await reader.readexactly(count)
        if 2 not in methods:
            writer.write(b"\x05\xff")
            await writer.drain()
            return
        writer.write(b"\x05\x02")
        await writer.drain()
        _, user_len = await reader.readexactly(2)
        user = await reader.readexactly(user_len)
        (password_len,) = await reader.readexactly(1)
        password = await reader.readexactly(password_len)
        ok = user == self.login.encode() and password == self.password.encode()
        writer.write(b"\x01\x00" if ok else b"\x01\x01")
        await writer.drain()
        self.after_auth.append(await reader.read())


async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accepts and never answers (waits for the client to give up)."""
    await reader.read()


async def hang_up(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Accepts and closes at once, without a word."""
