"""The callback sender (spec §8): real receivers on 127.0.0.1, and the guard in front."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import shutil
import ssl
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from capd.outbound.callbacks import CallbackSender
from capd.outbound.guard import AddressGuard, Resolver
from tests.outbound.servers import Receiver, TcpServer

LOOPBACK = AddressGuard(allow_private=True)
RESULT = {"errorId": 0, "status": "ready", "solution": {"text": "5j8rt"}, "cost": "0.0002",
          "ip": "203.0.113.7", "createTime": 1700000000, "endTime": 1700000002,
          "solveCount": 1, "note": "ünïcode"}


def resolver(answers: dict[str, list[str]]) -> Resolver:
    async def resolve(host: str) -> list[str]:
        if host not in answers:
            raise OSError("no such host")
        return answers[host]
    return resolve


async def deliver(sender: CallbackSender, *submissions: tuple[str, dict[str, Any]]) -> None:
    """Start, submit, wait until every callback is settled, stop."""
    await sender.start()
    try:
        for url, payload in submissions:
            assert sender.submit(url, payload)
        await asyncio.wait_for(sender.drain(), 5.0)
    finally:
        await sender.stop()


def test_posts_the_exact_json_with_content_type() -> None:
    receiver = Receiver()

    async def main() -> CallbackSender:
        async with TcpServer(receiver) as server:
            sender = CallbackSender(LOOPBACK)
            await deliver(sender, (f"http://127.0.0.1:{server.port}/hook?task=7", RESULT))
            return sender

    sender = asyncio.run(main())
    assert (sender.delivered, sender.failed, sender.dropped) == (1, 0, 0)
    [request] = receiver.requests
    assert request.method == "POST" and request.target == "/hook?task=7"
    assert request.headers["content-type"] == "application/json"
    assert json.loads(request.body) == RESULT


def test_connects_to_the_checked_address_with_the_original_host_header() -> None:
    receiver = Receiver()
    guard = AddressGuard(allow_private=True, resolver=resolver({"hook.test": ["127.0.0.1"]}))

    async def main() -> CallbackSender:
        async with TcpServer(receiver) as server:
            sender = CallbackSender(guard)
            await deliver(sender, (f"http://hook.test:{server.port}/cb", RESULT))
            return sender

    sender = asyncio.run(main())
    assert sender.delivered == 1
    assert receiver.requests[0].headers["host"].startswith("hook.test:")


def test_failing_receiver_is_retried_until_it_accepts() -> None:
    receiver = Receiver(statuses=[500, 500, 200])

    async def main() -> CallbackSender:
        async with TcpServer(receiver) as server:
            sender = CallbackSender(LOOPBACK, retries=3, backoff_s=0.05)
            await deliver(sender, (f"http://127.0.0.1:{server.port}/", RESULT))
            return sender

    sender = asyncio.run(main())
    assert (sender.delivered, sender.failed) == (1, 0)
    assert len(receiver.requests) == 3
    assert all(json.loads(r.body) == RESULT for r in receiver.requests)


def test_gives_up_after_retries_plus_one_attempts() -> None:
    receiver = Receiver(statuses=[503])

    async def main() -> CallbackSender:
        async with TcpServer(receiver) as server:
            sender = CallbackSender(LOOPBACK, retries=2, backoff_s=0.02)
            await deliver(sender, (f"http://127.0.0.1:{server.port}/", RESULT))
            return sender

    sender = asyncio.run(main())
    assert (sender.delivered, sender.failed) == (0, 1)
    assert len(receiver.requests) == 3


def test_dead_receiver_is_retried_then_given_up() -> None:
    async def main() -> CallbackSender:
        async with TcpServer(Receiver()) as server:
            port = server.port
        sender = CallbackSender(LOOPBACK, retries=1, backoff_s=0.02)
        await deliver(sender, (f"http://127.0.0.1:{port}/", RESULT))  # nothing listens now
        return sender

    sender = asyncio.run(main())
    assert (sender.delivered, sender.failed) == (0, 1)


def test_slow_receiver_does_not_delay_a_healthy_one() -> None:
    slow, healthy = Receiver(hang=True), Receiver()

    async def main() -> float:
        async with TcpServer(slow) as slow_server, TcpServer(healthy) as healthy_server:
            sender = CallbackSender(LOOPBACK, timeout_s=2.0, retries=0)
            await sender.start()
            try:
                started = time.monotonic()
                assert sender.submit(f"http://127.0.0.1:{slow_server.port}/slow", RESULT)
                await asyncio.wait_for(slow.arrived.wait(), 1.0)  # the slow one holds a sender
                assert sender.submit(f"http://127.0.0.1:{healthy_server.port}/ok", RESULT)
                await asyncio.wait_for(healthy.arrived.wait(), 1.0)
                elapsed = time.monotonic() - started
                assert sender.failed == 0  # the slow one is still waiting for its answer
            finally:
                await sender.stop()
            return elapsed

    elapsed = asyncio.run(main())
    assert elapsed < 1.0  # well before the slow receiver's 2 s timeout
    assert len(healthy.requests) == 1 and len(slow.requests) == 1


def test_slow_receiver_times_out_after_timeout_s() -> None:
    slow = Receiver(hang=True)

    async def main() -> tuple[float, CallbackSender]:
        async with TcpServer(slow) as server:
            sender = CallbackSender(LOOPBACK, timeout_s=0.3, retries=0)
            started = time.monotonic()
            await deliver(sender, (f"http://127.0.0.1:{server.port}/", RESULT))
            return time.monotonic() - started, sender

    elapsed, sender = asyncio.run(main())
    assert sender.failed == 1 and 0.25 < elapsed < 1.5


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost", "[::1]", "2130706433"])
def test_default_guard_refuses_internal_targets_without_connecting(host: str) -> None:
    receiver = Receiver()

    async def main() -> tuple[float, CallbackSender, int]:
        async with TcpServer(receiver) as server:
            sender = CallbackSender(AddressGuard(), retries=3, backoff_s=5.0)
            started = time.monotonic()
            await deliver(sender, (f"http://{host}:{server.port}/cb", RESULT))
            return time.monotonic() - started, sender, server.connections

    elapsed, sender, connections = asyncio.run(main())
    assert (sender.delivered, sender.failed, connections) == (0, 1, 0)
    assert elapsed < 5.0  # given up at once, no retry after backoff_s


def test_queue_full_refuses_submit() -> None:
    async def main() -> tuple[list[bool], CallbackSender]:
        sender = CallbackSender(LOOPBACK, queue_size=2)  # not started: nothing is taken
        results = [sender.submit(f"http://127.0.0.1:9/{i}", RESULT) for i in range(3)]
        await sender.stop()
        return results, sender

    results, sender = asyncio.run(main())
    assert results == [True, True, False]
    assert sender.dropped == 3  # one refused at submit, two pending at stop


def test_urls_that_are_not_http_are_refused_at_submit() -> None:
    sender = CallbackSender(LOOPBACK)
    assert not sender.submit("ftp://example.com/x", RESULT)
    assert not sender.submit("http:///nohost", RESULT)
    assert sender.failed == 2


def test_logs_never_show_the_query_string(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, httpx and httpcore included

    async def main() -> None:
        async with TcpServer(Receiver(statuses=[500, 200])) as server:
            sent = CallbackSender(LOOPBACK, backoff_s=0.01)
            await deliver(sent, (f"http://127.0.0.1:{server.port}/ok?token=SECRET-A", RESULT))
            assert sent.delivered == 1
        refused = CallbackSender(AddressGuard())
        await deliver(refused, ("http://127.0.0.1:8080/cb/path?token=SECRET-B", RESULT))
        full = CallbackSender(AddressGuard(), queue_size=1)
        assert full.submit("http://example.com/a", RESULT)
        assert not full.submit("http://u:pw-SECRET@example.com/b?k=SECRET-C", RESULT)
        await full.stop()

    asyncio.run(main())
    assert "http://127.0.0.1/cb/path" in caplog.text
    assert "http://example.com/b" in caplog.text
    assert "SECRET" not in caplog.text


def test_credentials_in_the_url_become_basic_auth() -> None:
    receiver = Receiver()

    async def main() -> None:
        async with TcpServer(receiver) as server:
            await deliver(CallbackSender(LOOPBACK),
                          (f"http://hook:pa%20ss@127.0.0.1:{server.port}/cb", RESULT))

    asyncio.run(main())
    expected = "Basic " + base64.b64encode(b"hook:pa ss").decode()
    assert receiver.requests[0].headers["authorization"] == expected


@pytest.fixture
def tls_files(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate for hook.test (and nothing else)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt",
                    "ec_paramgen_curve:prime256v1", "-nodes", "-keyout", str(key), "-out",
                    str(cert), "-days", "2", "-subj", "/CN=hook.test", "-addext",
                    "subjectAltName=DNS:hook.test"], check=True, capture_output=True)
    return cert, key


def test_https_checks_the_certificate_against_the_url_name(tls_files: tuple[Path, Path]) -> None:
    cert, key = tls_files
    server_tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_tls.load_cert_chain(cert, key)
    client_tls = ssl.create_default_context(cafile=str(cert))
    guard = AddressGuard(allow_private=True, resolver=resolver({"hook.test": ["127.0.0.1"],
                                                                "other.test": ["127.0.0.1"]}))
    receiver = Receiver()

    async def main() -> tuple[CallbackSender, CallbackSender]:
        async with TcpServer(receiver, tls=server_tls) as server:
            good = CallbackSender(guard, verify=client_tls, retries=0)
            await deliver(good, (f"https://hook.test:{server.port}/cb", RESULT))
            bad = CallbackSender(guard, verify=client_tls, retries=0)
            await deliver(bad, (f"https://other.test:{server.port}/cb", RESULT))
            return good, bad

    good, bad = asyncio.run(main())
    assert (good.delivered, bad.delivered, bad.failed) == (1, 0, 1)
    assert len(receiver.requests) == 1 and json.loads(receiver.requests[0].body) == RESULT
