"""Schema-driven fuzzing with the proxy pre-flight ON (issue 12 §4): createTask and the
2captcha door, their generated requests steered to carry proxies, which point at test
servers on loopback (the settings allow private proxies). No request may get a 5xx, and
every answer keeps the documented shape.

The proxies behave each its own way: a proxy that lets the CONNECT through, one that
wants a login (407), one that never answers (the check times out), one that answers
nonsense, and a port where nothing listens. The generated websiteURL, pageurl and the
rest go through as generated, so the pre-flight sees odd target hosts too.
"""

from __future__ import annotations

import socketserver
import threading
import zlib
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import settings

from capd.api.openapi import openapi_document
from tests.hardening.conftest import budget
from tests.hardening.test_fuzz_openapi import CHECKS, FUZZ_SETTINGS
from tests.helpers import SITEKEY, LiveServer, free_port

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

schema = schemathesis.openapi.from_dict(openapi_document()).include(
    path_regex=r"^/(createTask|in\.php)$")
# task types that take a proxy: the pre-flight runs for these
PROXY_TYPES = ["RecaptchaV2Task", "HCaptchaTask", "TurnstileTask", "FunCaptchaTask",
               "GeeTestTask", "NoCaptchaTask", "RecaptchaV2EnterpriseTask"]
ANSWERS = {
    "open": b"HTTP/1.1 200 Connection established\r\n\r\n",
    "login": b"HTTP/1.1 407 Proxy Authentication Required\r\n\r\n",
    "nonsense": b"SSH-2.0-OpenSSH_9.6\r\n",
    "mute": b"",  # reads the request and never answers
}


class _Proxy(socketserver.BaseRequestHandler):
    def handle(self) -> None:
        answer = self.server.answer  # type: ignore[attr-defined]
        self.request.settimeout(2)
        try:
            self.request.recv(4096)
            if answer:
                self.request.sendall(answer)
            else:
                self.request.recv(4096)  # until the checker gives up and closes
        except OSError:
            pass


@pytest.fixture
def proxies() -> Iterator[list[int]]:
    """Ports of the loopback proxies, and one where nothing listens."""
    servers = []
    for answer in ANSWERS.values():
        server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Proxy)
        server.daemon_threads = True
        server.answer = answer  # type: ignore[attr-defined]
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
    try:
        yield [s.server_address[1] for s in servers] + [free_port()]
    finally:
        for server in servers:
            server.shutdown()
            server.server_close()


@pytest.fixture
def world(make_server: Any, proxies: list[int]) -> dict[str, Any]:
    """A live server with the pre-flight on and private proxies allowed, a funded key,
    and a worker that serves the proxy types (else createTask stops at capacity)."""
    server: LiveServer = make_server(
        **FUZZ_SETTINGS, proxy_preflight=True, allow_private_proxies=True,
        proxy_check_timeout_s=0.3, proxy_check_cache_s=0, proxy_checks_per_window=10**9)
    key = server.new_account("100")
    token = server.new_worker_token()
    served = server.call("worker/v1/lease", {"workerToken": token, "types": PROXY_TYPES,
                                             "waitSeconds": 0})
    assert served.get("errorId") == 0, served
    return {"server": server, "clientKey": key, "ports": proxies}


def _pick(seed: bytes, options: list[Any]) -> Any:
    return options[zlib.crc32(seed) % len(options)]


def _steer(case: Any, world: dict[str, Any]) -> None:
    """A real key, and a proxy on one of the loopback servers (mostly; a few keep what
    was generated), so that the requests reach the pre-flight."""
    body, query = case.body, case.query
    if isinstance(body, dict):
        seed = repr(body).encode()
        body["clientKey"] = world["clientKey"]
        task = body.get("task")
        if isinstance(task, dict) and zlib.crc32(seed) % 8:
            task.setdefault("websiteKey", SITEKEY)
            task.setdefault("websiteURL", "https://example.com/")
            task["type"] = _pick(seed, PROXY_TYPES)
            task.update(proxyType=_pick(seed[::-1], ["http", "https", "socks5", "socks4"]),
                        proxyAddress=_pick(seed[1:], ["127.0.0.1", "localhost", "::1"]),
                        proxyPort=_pick(seed[2:], world["ports"]))
            if zlib.crc32(seed[3:]) % 3 == 0:
                task.update(proxyLogin="user", proxyPassword="pass")
    if isinstance(query, dict):
        seed = repr(query).encode()
        query["key"] = world["clientKey"]
        if zlib.crc32(seed) % 8:
            query["method"] = _pick(seed, ["userrecaptcha", "hcaptcha", "turnstile"])
            query.setdefault("googlekey", SITEKEY)
            query.setdefault("sitekey", SITEKEY)
            query.setdefault("pageurl", "https://example.com/")
            query["proxy"] = f"127.0.0.1:{_pick(seed[1:], world['ports'])}"
            query["proxytype"] = _pick(seed[2:], ["HTTP", "HTTPS", "SOCKS5", "SOCKS4"])


def test_loopback_proxies_answer_as_their_kind(world: dict[str, Any]) -> None:
    """The steering reaches the pre-flight: each kind of proxy gets its own answer."""
    server: LiveServer = world["server"]
    open_, login, nonsense, mute, closed = world["ports"]
    expected = {open_: 0, login: "ERROR_PROXY_NOT_AUTHORISED",
                nonsense: "ERROR_PROXY_READ_TIMEOUT", mute: "ERROR_PROXY_READ_TIMEOUT",
                closed: "ERROR_PROXY_CONNECT_REFUSED"}
    for port, outcome in expected.items():
        answer = server.call("createTask", {"clientKey": world["clientKey"], "task": {
            "type": "RecaptchaV2Task", "websiteURL": "https://example.com/",
            "websiteKey": SITEKEY, "proxyType": "http", "proxyAddress": "127.0.0.1",
            "proxyPort": port}})
        assert answer.get("errorCode", answer["errorId"]) == outcome, (port, answer)


@schema.parametrize()
@settings(settings.get_profile("capd-hardening"), max_examples=budget(40))
def test_preflight_never_answers_5xx(case: Any, world: dict[str, Any]) -> None:
    _steer(case, world)
    case.call_and_validate(base_url=world["server"].url, checks=CHECKS, timeout=30)


@pytest.mark.parametrize("url", ["https://exa mple.com/", "https://[::1/",
                                 "https://ex%00ample.com/", "https://" + "a" * 300 + ".com/"])
def test_odd_target_host_with_a_proxy_is_a_parameter_error(world: dict[str, Any],
                                                           url: str) -> None:
    answer = world["server"].call("createTask", {"clientKey": world["clientKey"], "task": {
        "type": "RecaptchaV2Task", "websiteURL": url, "websiteKey": SITEKEY,
        "proxyType": "http", "proxyAddress": "127.0.0.1", "proxyPort": world["ports"][0]}})
    assert answer["errorId"] == 1 and answer["errorCode"] in (
        "ERROR_BAD_PARAMETERS", "ERROR_RECAPTCHA_INVALID_DOMAIN"), answer
