"""Over-limit request bodies (spec §1) are refused with the JSON error the client can
read: a body up to MAX_DRAIN_BYTES is read and discarded first (a server that answers
and closes while the client still sends makes the kernel reset the connection, and the
client sometimes saw a broken pipe instead of ERROR_TOO_BIG_CAPTCHA_FILESIZE); a longer
one is refused at once and the connection closed."""

from __future__ import annotations

import http.client
import json
import socket
import urllib.request
from pathlib import Path
from typing import Any

import pytest

from capd.constants import MAX_BODY_BYTES, MAX_DRAIN_BYTES
from tests.helpers import LiveServer

ROUNDS = 20  # the failure this guards against came about once in four runs
TIMEOUT_S = 20  # bound on each exchange; none is expected to take long
BIG = 2 * 1024 * 1024  # over MAX_BODY_BYTES, under MAX_DRAIN_BYTES


@pytest.fixture
def backend(tmp_path: Path) -> str:
    """SQLite only: the body limit is transport, the same on every store backend."""
    return f"sqlite:///{tmp_path}/capd.db"


def big_create_body(size: int) -> bytes:
    head = b'{"clientKey": "' + b"0" * 32 + b'", "task": {"type": "ImageToTextTask", "body": "'
    tail = b'"}}'
    return head + b"A" * (size - len(head) - len(tail)) + tail


def test_constants_leave_room_to_drain() -> None:
    assert MAX_BODY_BYTES < BIG < MAX_DRAIN_BYTES


def test_oversized_create_body_is_answered_with_its_error_every_time(
        server: LiveServer) -> None:
    body = big_create_body(BIG)
    for round_no in range(ROUNDS):
        request = urllib.request.Request(f"{server.url}/createTask", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            answer = json.loads(response.read())
        assert answer["errorCode"] == "ERROR_TOO_BIG_CAPTCHA_FILESIZE", (round_no, answer)
        assert answer["errorId"] == 1 and answer["taskId"] == 0


def raw_exchange(server: LiveServer, head: bytes, body: bytes) -> bytes:
    """Send a whole request on a raw socket, then read the answer to the end."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT_S) as sock:
        sock.sendall(head + body)
        sock.shutdown(socket.SHUT_WR)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def test_oversized_bodies_on_raw_sockets_read_the_refusal(server: LiveServer) -> None:
    body = big_create_body(BIG)
    for path, expected in (("/createTask", b'"ERROR_TOO_BIG_CAPTCHA_FILESIZE"'),
                           ("/getBalance", b'"ERROR_TOO_BIG_CAPTCHA_FILESIZE"'),
                           ("/in.php", b"ERROR_TOO_BIG_CAPTCHA_FILESIZE")):
        head = (f"POST {path} HTTP/1.1\r\nHost: capd\r\nContent-Type: application/json\r\n"
                f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n").encode()
        for round_no in range(ROUNDS):
            answer = raw_exchange(server, head, body)
            assert answer.startswith(b"HTTP/1.1 "), (path, round_no, answer[:200])
            assert expected in answer, (path, round_no, answer[:400])


def test_oversized_chunked_body_reads_the_refusal(server: LiveServer) -> None:
    piece = b"A" * 65536
    chunked = b"".join(b"%x\r\n" % len(piece) + piece + b"\r\n"
                       for _ in range(BIG // len(piece))) + b"0\r\n\r\n"
    head = (b"POST /createTask HTTP/1.1\r\nHost: capd\r\nContent-Type: application/json\r\n"
            b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n")
    for round_no in range(ROUNDS):
        answer = raw_exchange(server, head, chunked)
        assert b'"ERROR_TOO_BIG_CAPTCHA_FILESIZE"' in answer, (round_no, answer[:400])


def test_the_connection_stays_usable_after_a_drained_refusal(server: LiveServer,
                                                              key: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=TIMEOUT_S)
    try:
        conn.request("POST", "/createTask", body=big_create_body(BIG),
                     headers={"Content-Type": "application/json"})
        refused: Any = json.loads(conn.getresponse().read())
        assert refused["errorCode"] == "ERROR_TOO_BIG_CAPTCHA_FILESIZE"
        conn.request("POST", "/getBalance", body=json.dumps({"clientKey": key}),
                     headers={"Content-Type": "application/json"})
        answer = json.loads(conn.getresponse().read())
        assert answer["errorId"] == 0 and "balance" in answer, answer
    finally:
        conn.close()


def test_a_body_declared_beyond_the_drain_cap_is_refused_at_once(server: LiveServer) -> None:
    declared = MAX_DRAIN_BYTES + 1
    with socket.create_connection(("127.0.0.1", server.port), timeout=TIMEOUT_S) as sock:
        sock.sendall(b"POST /createTask HTTP/1.1\r\nHost: capd\r\n"
                     b"Content-Type: application/json\r\n"
                     + f"Content-Length: {declared}\r\n\r\n".encode() + b"{")
        chunks = []
        while chunk := sock.recv(65536):  # the server answers and closes without the body
            chunks.append(chunk)
    answer = b"".join(chunks)
    assert b'"ERROR_TOO_BIG_CAPTCHA_FILESIZE"' in answer, answer[:400]
    assert b"connection: close" in answer.lower()
