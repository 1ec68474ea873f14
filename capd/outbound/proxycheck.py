"""Proxy pre-flight before a task is queued (spec §5, §10).

A check proves the proxy is reachable and takes our login, and nothing more:
- every address the proxy's host stands for passes the guard right before connecting, and
  the connection goes to the checked address itself (the name is never resolved twice);
- http/https proxies get one ``CONNECT`` for the task's website and only the status line is
  read ("https" is the client's name for an HTTP proxy that tunnels TLS, not TLS to the proxy);
- socks5 proxies get the greeting and, when they choose it, the login; no command is sent,
  so the check makes no third-party connection;
- socks4 proxies get a TCP connect only (the protocol has no login to prove).

A proxy that accepts the TCP connection and then closes it, or answers something that is
not its protocol, is reported as ``ERROR_PROXY_READ_TIMEOUT``: it is listening but gives no
usable proxy answer, which is what that code tells the client. ``ERROR_PROXY_CONNECT_REFUSED``
is kept for failures up to and including the TCP connect (internal or unresolvable host,
refused, unreachable, connect timed out).
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import logging
import time
from collections.abc import Awaitable, Callable
from contextlib import suppress
from dataclasses import dataclass, field

from capd.outbound.guard import AddressGuard, IPAddress

log = logging.getLogger("capd.outbound")

CONNECT_REFUSED = "ERROR_PROXY_CONNECT_REFUSED"
NOT_AUTHORISED = "ERROR_PROXY_NOT_AUTHORISED"
READ_TIMEOUT = "ERROR_PROXY_READ_TIMEOUT"

PROXY_TYPES = ("http", "https", "socks4", "socks5")
MAX_CACHE_ENTRIES = 10_000
STATUS_LINE_LIMIT_BYTES = 4_096  # a proxy's status line is short; more is not a proxy

Opener = Callable[[str, int], Awaitable[tuple[asyncio.StreamReader, asyncio.StreamWriter]]]


@dataclass(frozen=True)
class ProxySpec:
    """A client's proxy as given in the task; ``repr`` never shows the password."""

    type: str  # "http" | "https" | "socks4" | "socks5"
    address: str  # host name or IP literal as the client sent it
    port: int
    login: str | None = None
    password: str | None = field(default=None, repr=False)


async def _open(host: str, port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.open_connection(host, port, limit=STATUS_LINE_LIMIT_BYTES)


class ProxyChecker:
    """Checks proxies, remembering each answer (good or bad) for ``cache_s`` seconds.

    ``opener`` connects to an IP address literal (tests point it elsewhere to watch which
    address would have been used).
    """

    def __init__(self, guard: AddressGuard, timeout_s: float = 3.0, cache_s: float = 60.0,
                 clock: Callable[[], float] = time.monotonic, *,
                 opener: Opener = _open) -> None:
        self._guard = guard
        self._timeout_s = timeout_s
        self._cache_s = cache_s
        self._clock = clock
        self._open = opener
        self._cache: dict[tuple[str, ...], tuple[float, str | None]] = {}
        self._inflight: dict[tuple[str, ...], asyncio.Task[str | None]] = {}

    async def check(self, proxy: ProxySpec, target_host: str, target_port: int = 443) -> str | None:
        """None when the proxy looks usable, else the capd error code:
        ERROR_PROXY_CONNECT_REFUSED (internal address per the guard, name that does not resolve,
        TCP connect refused/unreachable/timed out), ERROR_PROXY_NOT_AUTHORISED (an HTTP(S) proxy
        answers 407 to our CONNECT; a SOCKS5 proxy refuses our login or wants a login we don't
        have), ERROR_PROXY_READ_TIMEOUT (connects but does not answer within timeout_s, closes
        without answering, or answers outside its protocol).

        Raises ValueError for an unknown proxy type, a port outside 1-65535, or a target
        host that cannot be written into a request line. Concurrent checks of the same proxy
        share one probe.
        """
        if proxy.type not in PROXY_TYPES:
            raise ValueError(f"unknown proxy type {proxy.type!r}")
        if not 1 <= proxy.port <= 65535:
            raise ValueError(f"proxy port {proxy.port} is out of range")
        if not target_host or any(c.isspace() or not c.isprintable() for c in target_host):
            raise ValueError("target host is empty or has whitespace or control characters")
        key = _cache_key(proxy)
        now = self._clock()
        cached = self._cache.get(key)
        if cached is not None and cached[0] > now:
            return cached[1]
        task = self._inflight.get(key)
        if task is None:
            task = asyncio.create_task(self._probe(proxy, target_host, target_port))
            self._inflight[key] = task
            task.add_done_callback(lambda t: self._remember(key, t))
        # shield: one caller giving up must not cancel the probe the others wait on
        return await asyncio.shield(task)

    def _remember(self, key: tuple[str, ...], task: asyncio.Task[str | None]) -> None:
        self._inflight.pop(key, None)
        if task.cancelled() or task.exception() is not None:
            return
        now = self._clock()
        if len(self._cache) >= MAX_CACHE_ENTRIES:
            self._cache = {k: v for k, v in self._cache.items() if v[0] > now}
            while len(self._cache) >= MAX_CACHE_ENTRIES:
                del self._cache[next(iter(self._cache))]  # oldest first
        self._cache[key] = (now + self._cache_s, task.result())

    async def _probe(self, proxy: ProxySpec, target_host: str, target_port: int) -> str | None:
        addrs = await self._guard.public_addresses(proxy.address)
        if addrs is None:
            log.info("proxy %r refused: internal or unresolvable address", proxy)
            return CONNECT_REFUSED
        opened = await self._connect(addrs, proxy.port)
        if opened is None:
            log.info("proxy %r refused: cannot connect", proxy)
            return CONNECT_REFUSED
        reader, writer = opened
        try:
            if proxy.type == "socks4":
                return None
            dialogue = (_socks5(reader, writer, proxy) if proxy.type == "socks5"
                        else _http_connect(reader, writer, proxy, target_host, target_port))
            result = await asyncio.wait_for(dialogue, self._timeout_s)
        except (TimeoutError, OSError, EOFError, ValueError):
            # no answer in time, reset, closed early (IncompleteReadError is an EOFError),
            # or a line over the stream limit (ValueError)
            result = READ_TIMEOUT
        finally:
            writer.close()
            with suppress(OSError):
                await writer.wait_closed()
        if result is not None:
            log.info("proxy %r check failed: %s", proxy, result)
        return result

    async def _connect(self, addrs: list[IPAddress], port: int
                       ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """Connect to the first address that accepts, within timeout_s for all of them."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._timeout_s
        for addr in addrs:
            left = deadline - loop.time()
            if left <= 0:
                break
            try:
                return await asyncio.wait_for(self._open(str(addr), port), left)
            except (OSError, TimeoutError):
                continue
        return None


def _cache_key(proxy: ProxySpec) -> tuple[str, ...]:
    # the password is kept only as a digest, so the cache holds no reusable secret
    secret = hashlib.sha256((proxy.password or "").encode()).hexdigest()
    return (proxy.type, proxy.address.strip().lower(), str(proxy.port),
            proxy.login or "", secret)


async def _http_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                        proxy: ProxySpec, target_host: str, target_port: int) -> str | None:
    host = f"[{target_host}]" if ":" in target_host else target_host
    lines = [f"CONNECT {host}:{target_port} HTTP/1.1", f"Host: {host}:{target_port}"]
    if proxy.login:
        token = base64.b64encode(f"{proxy.login}:{proxy.password or ''}".encode()).decode()
        lines.append(f"Proxy-Authorization: Basic {token}")
    writer.write(("\r\n".join(lines) + "\r\n\r\n").encode())
    await writer.drain()
    status = await reader.readline()
    parts = status.split(None, 2)
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return READ_TIMEOUT  # closed without a status line, or not an HTTP proxy
    # any other status (200, 403, 502 …) is the proxy answering: usable as far as we can tell
    return NOT_AUTHORISED if parts[1] == b"407" else None


async def _socks5(reader: asyncio.StreamReader, writer: asyncio.StreamWriter,
                  proxy: ProxySpec) -> str | None:
    # RFC 1928 greeting: no-auth, plus user/pass (RFC 1929) when we have a login
    methods = b"\x00\x02" if proxy.login else b"\x00"
    writer.write(b"\x05" + bytes([len(methods)]) + methods)
    await writer.drain()
    version, method = await reader.readexactly(2)
    if version != 5:
        return READ_TIMEOUT  # not a SOCKS5 proxy
    if method == 0x00:
        return None
    if method != 0x02 or not proxy.login:
        return NOT_AUTHORISED  # 0xFF (nothing acceptable) or a login we don't have
    user = proxy.login.encode()
    password = (proxy.password or "").encode()
    if len(user) > 255 or len(password) > 255:
        return NOT_AUTHORISED  # cannot be sent in RFC 1929
    writer.write(b"\x01" + bytes([len(user)]) + user + bytes([len(password)]) + password)
    await writer.drain()
    _, status = await reader.readexactly(2)  # some servers answer version 5 here, not 1
    return None if status == 0 else NOT_AUTHORISED
