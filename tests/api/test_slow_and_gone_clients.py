"""Issue 13, finding 5 (transport side): slow clients are cut off (header and body read
timeouts), a client that hangs up is one log line, and res.php's multi-id answer cannot
be made ambiguous by a solution's content."""

from __future__ import annotations

import logging
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route

from capd.api.protocol import guarded
from capd.api.twocaptcha import multi_id_part
from tests.helpers import LiveServer

TIMEOUT_S = 20  # bound on every exchange; the cut-offs under test are well below it


@pytest.fixture
def backend(tmp_path: Path) -> str:
    """SQLite only: this is transport, the same on every store backend."""
    return f"sqlite:///{tmp_path}/capd.db"


def read_all(sock: socket.socket) -> bytes:
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def partial_create(port: int, declared: int, sent: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S)
    sock.sendall(b"POST /createTask HTTP/1.1\r\nHost: capd\r\nContent-Type: application/json"
                 b"\r\nContent-Length: " + str(declared).encode() + b"\r\n\r\n" + sent)
    return sock


def test_stalled_body_is_cut_off_with_408(make_server: Any) -> None:
    server: LiveServer = make_server(body_read_timeout_s=0.3)
    with partial_create(server.port, 100, b'{"clientKey": ') as sock:
        answer = read_all(sock)  # the server answers and closes; it does not wait for more
    assert answer.startswith(b"HTTP/1.1 408")


def wait_for_record(caplog: pytest.LogCaptureFixture, text: str) -> None:
    deadline = time.monotonic() + TIMEOUT_S
    while not any(text in r.getMessage() for r in caplog.records):
        assert time.monotonic() < deadline, f"no log line with {text!r}"
        time.sleep(0.02)


def test_client_disconnect_is_one_log_line(server: LiveServer,
                                           caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO)
    for _ in range(5):
        partial_create(server.port, 1000, b'{"clientKey": "').close()
    wait_for_record(caplog, "client disconnected during createTask")
    deadline = time.monotonic() + TIMEOUT_S
    while sum("client disconnected" in r.getMessage() for r in caplog.records) < 5:
        assert time.monotonic() < deadline
        time.sleep(0.02)
    assert [r for r in caplog.records if r.levelno >= logging.ERROR or r.exc_info] == []


async def hello(request: Any) -> PlainTextResponse:
    return PlainTextResponse("hello")


@pytest.mark.parametrize("protocol", ["h11", "httptools"])
def test_headers_trickled_past_the_timeout_close_the_connection(protocol: str) -> None:
    app = Starlette(routes=[Route("/", hello)])
    config = uvicorn.Config(app, host="127.0.0.1", port=0, http=guarded(protocol, 0.3),
                            log_level="warning", lifespan="off")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + TIMEOUT_S
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
            assert read_all(sock) == b""  # closed by the server, no answer
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT_S) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            assert read_all(sock).endswith(b"hello")  # a prompt client is served
    finally:
        server.should_exit = True
        thread.join(timeout=TIMEOUT_S)


def test_idle_connections_outlive_the_common_client_pools() -> None:
    """An idle keep-alive connection must outlast a client pool's idle expiry (httpx 5 s,
    aiohttp 15 s): when both sides expire together, a request sent at that instant meets
    a connection the server is closing (a ReadError; uvicorn's own default is 5 s)."""
    from capd.cli import server_config
    from capd.config import Settings

    app = Starlette(routes=[Route("/", hello)])
    config = server_config(app, Settings(), "127.0.0.1", 0, "warning")
    assert config.timeout_keep_alive > 15
    assert server_config(app, Settings().replace(keep_alive_s=3.0), "127.0.0.1", 0,
                         "warning").timeout_keep_alive == 3


@pytest.mark.parametrize(("solution", "part"), [
    ("3084f4a302b176cd7.96368058|r=ap-southeast-1",
     "3084f4a302b176cd7.96368058%7Cr=ap-southeast-1"),
    ("100%|", "100%25%7C"),
    ("aB3k9", "aB3k9"),
])
def test_multi_id_answer_escapes_the_separator(solution: str, part: str) -> None:
    assert multi_id_part(solution) == part
    assert "|" not in multi_id_part(solution)
