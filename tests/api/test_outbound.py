"""Proxy pre-flight at createTask and callbacks on final states, through the live API, with
real little servers on loopback (the operator allows private addresses for these tests)."""

from __future__ import annotations

import base64
import json
import queue
import socketserver
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from tests.helpers import SITEKEY, LiveServer, blank_png, free_port, image_task

RECAPTCHA = {"type": "RecaptchaV2TaskProxyless", "websiteURL": "https://example.com/",
             "websiteKey": SITEKEY}


class _ProxyHandler(socketserver.StreamRequestHandler):
    """An HTTP proxy that wants Basic u:p and answers CONNECT with 200 or 407."""

    def handle(self) -> None:
        head = b""
        while not head.endswith(b"\r\n\r\n") and len(head) < 8192:
            chunk = self.rfile.readline()
            if not chunk:
                return
            head += chunk
        self.server.heads.put(head.decode("latin-1"))  # type: ignore[attr-defined]
        good = "Basic " + base64.b64encode(b"u:p").decode()
        status = "200 Connection established" if good in head.decode("latin-1") else (
            "407 Proxy Authentication Required")
        self.wfile.write(f"HTTP/1.1 {status}\r\n\r\n".encode())


class _SilentHandler(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        self.request.recv(4096)
        self.server.release.wait(10)  # type: ignore[attr-defined]


@pytest.fixture
def http_proxy() -> Iterator[socketserver.ThreadingTCPServer]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _ProxyHandler)
    server.heads = queue.Queue()  # type: ignore[attr-defined]
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


@pytest.fixture
def silent_server() -> Iterator[socketserver.ThreadingTCPServer]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _SilentHandler)
    server.release = threading.Event()  # type: ignore[attr-defined]
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.release.set()  # type: ignore[attr-defined]
    server.shutdown()
    server.server_close()


@pytest.fixture
def checked(make_server: Any) -> LiveServer:
    server = make_server(proxy_preflight=True, allow_private_proxies=True,
                         proxy_check_timeout_s=0.5)
    token = server.new_worker_token()
    server.call("worker/v1/lease", {"workerToken": token,
                                    "types": ["RecaptchaV2TaskProxyless"]})
    return server


def create_with_proxy(server: LiveServer, key: str, port: int, **proxy: Any) -> dict[str, Any]:
    task = {**RECAPTCHA, "proxyType": "http", "proxyAddress": "127.0.0.1", "proxyPort": port,
            **proxy}
    return server.call("createTask", {"clientKey": key, "task": task})


def test_proxy_that_refuses_connections(checked: LiveServer) -> None:
    key = checked.new_account("1")
    answer = create_with_proxy(checked, key, free_port())
    assert answer["errorCode"] == "ERROR_PROXY_CONNECT_REFUSED" and answer["taskId"] == 0


def test_proxy_that_refuses_the_login(checked: LiveServer, http_proxy: Any) -> None:
    key = checked.new_account("1")
    port = http_proxy.server_address[1]
    answer = create_with_proxy(checked, key, port, proxyLogin="u", proxyPassword="wrong")
    assert answer["errorCode"] == "ERROR_PROXY_NOT_AUTHORISED"
    assert "CONNECT example.com:443" in http_proxy.heads.get(timeout=5)


def test_proxy_that_accepts_the_login(checked: LiveServer, http_proxy: Any) -> None:
    key = checked.new_account("1")
    port = http_proxy.server_address[1]
    answer = create_with_proxy(checked, key, port, proxyLogin="u", proxyPassword="p")
    assert answer["errorId"] == 0 and answer["taskId"] > 0


def test_proxy_that_never_answers(checked: LiveServer, silent_server: Any) -> None:
    key = checked.new_account("1")
    answer = create_with_proxy(checked, key, silent_server.server_address[1])
    assert answer["errorCode"] == "ERROR_PROXY_READ_TIMEOUT"


def test_preflight_results_are_cached(checked: LiveServer, http_proxy: Any) -> None:
    key = checked.new_account("1")
    port = http_proxy.server_address[1]
    for _ in range(3):
        assert create_with_proxy(checked, key, port, proxyLogin="u",
                                 proxyPassword="p")["errorId"] == 0
    http_proxy.heads.get(timeout=5)
    assert http_proxy.heads.empty()  # one check for three tasks


def test_internal_proxy_refused_before_any_preflight(make_server: Any, http_proxy: Any) -> None:
    server = make_server(proxy_preflight=True)  # private proxies not allowed
    key = server.new_account("1")
    answer = create_with_proxy(server, key, http_proxy.server_address[1])
    assert answer["errorCode"] == "ERROR_PROXY_CONNECT_REFUSED"
    assert http_proxy.heads.empty()


# -- callbacks -------------------------------------------------------------------------------
class _Receiver(BaseHTTPRequestHandler):
    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        length = int(self.headers.get("Content-Length", 0))
        self.server.bodies.put((self.headers.get("Content-Type"),  # type: ignore[attr-defined]
                                json.loads(self.rfile.read(length))))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def receiver() -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    server.bodies = queue.Queue()  # type: ignore[attr-defined]
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield server
    server.shutdown()
    server.server_close()


def test_callback_posts_the_result_on_completion(make_server: Any, receiver: Any) -> None:
    server = make_server(allow_private_callbacks=True)
    key = server.new_account("1")
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hook?secret=s3"
    task_id = server.call("createTask", {"clientKey": key, "task": image_task("pq82"),
                                         "callbackUrl": url})["taskId"]
    content_type, body = receiver.bodies.get(timeout=15)
    assert content_type == "application/json"
    assert body["taskId"] == task_id and body["solution"] == {"text": "pq82"}
    polled = server.call("getTaskResult", {"clientKey": key, "taskId": task_id})
    assert {k: v for k, v in body.items() if k != "taskId"} == polled


def test_callback_on_failure_carries_the_error(make_server: Any, receiver: Any) -> None:
    server = make_server(allow_private_callbacks=True)
    key = server.new_account("1")
    url = f"http://127.0.0.1:{receiver.server_address[1]}/hook"
    task_id = server.call("createTask", {"clientKey": key, "callbackUrl": url, "task": {
        "type": "ImageToTextTask", "body": base64.b64encode(blank_png()).decode()}})["taskId"]
    _, body = receiver.bodies.get(timeout=15)
    assert body["taskId"] == task_id and body["errorCode"] == "ERROR_CAPTCHA_UNSOLVABLE"


def test_callback_pending_at_shutdown_is_delivered_after_restart(
        make_server: Any, clock: Any) -> None:
    """Issue 12: the callback outbox is in the database, so a restart loses nothing."""
    port = free_port()  # nothing listens there yet: the first node's attempt fails
    first = make_server(allow_private_callbacks=True)
    key = first.new_account("1")
    task_id = first.call("createTask", {"clientKey": key, "task": image_task("pq82"),
                                        "callbackUrl": f"http://127.0.0.1:{port}/hook"}
                         )["taskId"]
    assert first.wait_result(key, task_id)["status"] == "ready"
    first.stop()
    counts = first.admin(lambda store: store.callback_counts())
    assert (counts["pending"], counts["delivered"]) == (1, 0)
    receiver = ThreadingHTTPServer(("127.0.0.1", port), _Receiver)
    receiver.bodies = queue.Queue()  # type: ignore[attr-defined]
    threading.Thread(target=receiver.serve_forever, daemon=True).start()
    try:
        make_server(allow_private_callbacks=True)
        clock.advance(60)  # past any retry's backoff
        _, body = receiver.bodies.get(timeout=15)  # type: ignore[attr-defined]
        assert body["taskId"] == task_id and body["solution"] == {"text": "pq82"}
    finally:
        receiver.shutdown()
        receiver.server_close()
