"""Proxy pre-flight (spec §5): real little proxies on 127.0.0.1, and the guard in front."""

from __future__ import annotations

import asyncio
import base64
import logging
import socket

import pytest

from capd.outbound.guard import AddressGuard, Resolver
from capd.outbound.proxycheck import (
    CONNECT_REFUSED,
    NOT_AUTHORISED,
    READ_TIMEOUT,
    ProxyChecker,
    ProxySpec,
)
from tests.outbound.servers import HttpProxy, Socks5Proxy, TcpServer, hang_up, silent

LOOPBACK = AddressGuard(allow_private=True)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def resolver(answers: dict[str, list[list[str]]]) -> Resolver:
    """Answers each name with its next list of addresses (the last one repeats)."""
    async def resolve(host: str) -> list[str]:
        queue = answers.get(host)
        if not queue:
            raise OSError("no such host")
        return queue.pop(0) if len(queue) > 1 else queue[0]
    return resolve


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_closed_port_is_connect_refused() -> None:
    checker = ProxyChecker(LOOPBACK, timeout_s=1.0)
    proxy = ProxySpec("http", "127.0.0.1", closed_port())
    assert asyncio.run(checker.check(proxy, "example.com")) == CONNECT_REFUSED


def test_http_proxy_407_is_not_authorised_and_right_login_passes() -> None:
    fake = HttpProxy(login="user", password="s3cret")

    async def main() -> tuple[str | None, str | None, str | None]:
        async with TcpServer(fake) as server:
            checker = ProxyChecker(LOOPBACK, timeout_s=1.0)
            anonymous = await checker.check(ProxySpec("http", "127.0.0.1", server.port),
                                            "example.com")
            wrong = await checker.check(
                ProxySpec("https", "127.0.0.1", server.port, "user", "nope"), "example.com")
            right = await checker.check(
                ProxySpec("http", "127.0.0.1", server.port, "user", "s3cret"),
                "example.com", 8443)
            return anonymous, wrong, right

    assert asyncio.run(main()) == (NOT_AUTHORISED, NOT_AUTHORISED, None)
    first, headers = fake.heads[-1]
    assert first == "CONNECT example.com:8443 HTTP/1.1"
    assert headers["host"] == "example.com:8443"
    assert headers["proxy-authorization"] == "Basic " + base64.b64encode(b"user:s3cret").decode()
    assert "proxy-authorization" not in fake.heads[0][1]


def test_any_other_status_line_means_the_proxy_answered() -> None:
    async def forbidden(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        writer.write(b"HTTP/1.0 403 Forbidden\r\n\r\n")
        await writer.drain()
        await reader.read()

    async def main() -> str | None:
        async with TcpServer(forbidden) as server:
            checker = ProxyChecker(LOOPBACK, timeout_s=1.0)
            return await checker.check(ProxySpec("http", "127.0.0.1", server.port), "example.com")

    assert asyncio.run(main()) is None


@pytest.mark.parametrize("kind", ["http", "socks5"])
def test_proxy_that_never_answers_is_read_timeout(kind: str) -> None:
    async def main() -> str | None:
        async with TcpServer(silent) as server:
            checker = ProxyChecker(LOOPBACK, timeout_s=0.3)
            return await checker.check(ProxySpec(kind, "127.0.0.1", server.port), "example.com")

    assert asyncio.run(main()) == READ_TIMEOUT


@pytest.mark.parametrize("kind", ["http", "socks5"])
def test_proxy_that_hangs_up_without_answer_is_read_timeout(kind: str) -> None:
    async def main() -> str | None:
        async with TcpServer(hang_up) as server:
            checker = ProxyChecker(LOOPBACK, timeout_s=1.0)
            return await checker.check(ProxySpec(kind, "127.0.0.1", server.port), "example.com")

    assert asyncio.run(main()) == READ_TIMEOUT


def test_socks5_takes_the_right_login_only() -> None:
    fake = Socks5Proxy(login="u", password="p")

    async def main() -> list[str | None]:
        async with TcpServer(fake) as server:
            checker = ProxyChecker(LOOPBACK, timeout_s=1.0)
            specs = [ProxySpec("socks5", "127.0.0.1", server.port, "u", "p"),
                     ProxySpec("socks5", "127.0.0.1", server.port, "u", "wrong"),
                     ProxySpec("socks5", "127.0.0.1", server.port)]
            return [await checker.check(spec, "example.com") for spec in specs]

    assert asyncio.run(main()) == [None, NOT_AUTHORISED, NOT_AUTHORISED]
    assert fake.after_auth == [b"", b""]  # no CONNECT command after the login


def test_socks4_is_a_tcp_connect_only() -> None:
    async def main() -> tuple[str | None, int]:
        async with TcpServer(silent) as server:
            checker = ProxyChecker(LOOPBACK, timeout_s=1.0)
            result = await checker.check(ProxySpec("socks4", "127.0.0.1", server.port),
                                         "example.com")
            return result, server.connections

    assert asyncio.run(main()) == (None, 1)


def test_results_are_cached_until_the_clock_moves_past_cache_s() -> None:
    clock = Clock()

    async def main() -> list[int]:
        async with TcpServer(HttpProxy()) as server:
            checker = ProxyChecker(LOOPBACK, timeout_s=1.0, cache_s=60.0, clock=clock)
            proxy = ProxySpec("http", "127.0.0.1", server.port)
            seen = []
            for advance in (0.0, 59.0, 2.0):
                clock.now += advance
                assert await checker.check(proxy, "example.com") is None
                seen.append(server.connections)
            return seen

    assert asyncio.run(main()) == [1, 1, 2]


def test_bad_results_are_cached_too() -> None:
    clock = Clock()

    async def main() -> list[int]:
        async with TcpServer(HttpProxy(login="a", password="b")) as server:
            checker = ProxyChecker(LOOPBACK, timeout_s=1.0, cache_s=60.0, clock=clock)
            wrong = ProxySpec("http", "127.0.0.1", server.port, "a", "x")
            right = ProxySpec("http", "127.0.0.1", server.port, "a", "b")
            seen = []
            assert await checker.check(wrong, "example.com") == NOT_AUTHORISED
            assert await checker.check(wrong, "example.com") == NOT_AUTHORISED
            seen.append(server.connections)
            assert await checker.check(right, "example.com") is None  # its own cache entry
            seen.append(server.connections)
            return seen

    assert asyncio.run(main()) == [1, 2]


def test_concurrent_checks_of_one_proxy_share_one_probe() -> None:
    async def main() -> tuple[list[str | None], int]:
        async with TcpServer(HttpProxy()) as server:
            checker = ProxyChecker(LOOPBACK, timeout_s=1.0)
            proxy = ProxySpec("http", "127.0.0.1", server.port)
            results = await asyncio.gather(*(checker.check(proxy, "example.com")
                                             for _ in range(5)))
            return list(results), server.connections

    assert asyncio.run(main()) == ([None] * 5, 1)


@pytest.mark.parametrize("address", ["127.0.0.1", "localhost", "2130706433", "0x7f.1", "::1"])
def test_default_guard_refuses_internal_proxies_without_connecting(address: str) -> None:
    async def main() -> tuple[str | None, int]:
        async with TcpServer(HttpProxy()) as server:
            checker = ProxyChecker(AddressGuard(), timeout_s=1.0)
            result = await checker.check(ProxySpec("http", address, server.port), "example.com")
            return result, server.connections

    assert asyncio.run(main()) == (CONNECT_REFUSED, 0)


def test_name_that_does_not_resolve_is_connect_refused() -> None:
    checker = ProxyChecker(AddressGuard(resolver=resolver({})), timeout_s=1.0)
    proxy = ProxySpec("socks5", "nowhere.test", 1080)
    assert asyncio.run(checker.check(proxy, "example.com")) == CONNECT_REFUSED


def test_connects_to_the_checked_address_not_the_name() -> None:
    # the system resolver does not know proxy.test: only the guard's answer can be used
    guard = AddressGuard(allow_private=True, resolver=resolver({"proxy.test": [["127.0.0.1"]]}))

    async def main() -> tuple[str | None, int]:
        async with TcpServer(HttpProxy()) as server:
            checker = ProxyChecker(guard, timeout_s=1.0)
            result = await checker.check(ProxySpec("http", "proxy.test", server.port),
                                         "example.com")
            return result, server.connections

    assert asyncio.run(main()) == (None, 1)


def test_name_that_turns_internal_is_refused_at_the_next_check() -> None:
    clock = Clock()
    guard = AddressGuard(resolver=resolver({"rebind.test": [["93.184.215.14"], ["127.0.0.1"]]}))
    dialled: list[tuple[str, int]] = []

    async def main() -> list[str | None]:
        async with TcpServer(HttpProxy()) as server:
            async def opener(host: str, port: int
                             ) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
                dialled.append((host, port))  # stands in for the public address
                return await asyncio.open_connection("127.0.0.1", server.port)

            checker = ProxyChecker(guard, timeout_s=1.0, cache_s=60.0, clock=clock,
                                   opener=opener)
            proxy = ProxySpec("http", "rebind.test", 3128)
            first = await checker.check(proxy, "example.com")
            clock.now += 61.0
            second = await checker.check(proxy, "example.com")
            return [first, second]

    assert asyncio.run(main()) == [None, CONNECT_REFUSED]
    assert dialled == [("93.184.215.14", 3128)]


def test_password_never_shows(caplog: pytest.LogCaptureFixture) -> None:
    proxy = ProxySpec("http", "127.0.0.1", closed_port(), "user", "hunter2-secret")
    assert "hunter2-secret" not in repr(proxy) and "hunter2-secret" not in str(proxy)
    caplog.set_level(logging.DEBUG, logger="capd")
    checker = ProxyChecker(LOOPBACK, timeout_s=1.0)
    assert asyncio.run(checker.check(proxy, "example.com")) == CONNECT_REFUSED
    assert caplog.records and "hunter2-secret" not in caplog.text


def test_unknown_type_and_unsafe_target_are_programming_errors() -> None:
    checker = ProxyChecker(LOOPBACK)
    with pytest.raises(ValueError):
        asyncio.run(checker.check(ProxySpec("ftp", "127.0.0.1", 21), "example.com"))
    with pytest.raises(ValueError):
        asyncio.run(checker.check(ProxySpec("http", "127.0.0.1", 8080),
                                  "example.com\r\nX-Evil: 1"))
