"""Behind a trusted proxy, an X-Forwarded-For that does not name the client ("unknown",
garbage) refuses the request (ERROR_IP_NOT_ALLOWED) instead of attributing it to the
proxy itself (spec §4)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.api.test_whitelist import balance, whitelist
from tests.helpers import LiveServer

TRUSTED = "127.0.0.1/32,10.0.0.0/8"


@pytest.fixture
def backend(tmp_path: Path) -> str:
    """SQLite only: the client address is transport, the same on every store backend."""
    return f"sqlite:///{tmp_path}/capd.db"


@pytest.fixture
def proxied(make_server: Any) -> tuple[LiveServer, str]:
    server = make_server(trusted_proxies=TRUSTED)
    key = server.new_account("1")
    return server, key


@pytest.mark.parametrize("forwarded", [
    "unknown", "garbage", "203.0.113.7, unknown", "203.0.113.7,garbage",
    "unknown, 10.1.1.1", "203.0.113.7, not-an-ip, 10.9.9.9, 10.1.1.1", "_hidden", "1.2.3",
])
def test_unparsable_forwarded_client_is_refused(proxied: tuple[LiveServer, str],
                                                forwarded: str) -> None:
    server, key = proxied
    answer = balance(server, key, **{"X-Forwarded-For": forwarded})
    assert answer["errorId"] == 1 and answer["errorCode"] == "ERROR_IP_NOT_ALLOWED", answer


def test_refusal_is_not_the_proxys_own_allowance(proxied: tuple[LiveServer, str]) -> None:
    server, key = proxied
    whitelist(server, key, "127.0.0.1/32")  # the proxy's own address is allowed
    assert balance(server, key)["errorId"] == 0
    answer = balance(server, key, **{"X-Forwarded-For": "unknown"})
    assert answer["errorCode"] == "ERROR_IP_NOT_ALLOWED", answer


def test_garbage_left_of_the_client_is_never_read(proxied: tuple[LiveServer, str]) -> None:
    server, key = proxied
    whitelist(server, key, "203.0.113.0/24")
    # the walk from the right stops at the first untrusted address, the client
    answer = balance(server, key, **{"X-Forwarded-For": "unknown, 203.0.113.7, 10.1.1.1"})
    assert answer["errorId"] == 0, answer


def test_2captcha_door_answers_in_text(proxied: tuple[LiveServer, str]) -> None:
    server, key = proxied
    response = server.client.get("/res.php", params={"key": key, "action": "getbalance"},
                                 headers={"X-Forwarded-For": "unknown"})
    assert response.status_code == 200 and response.text == "ERROR_IP_NOT_ALLOWED"


def test_untrusted_peers_garbage_header_is_ignored(server: LiveServer, key: str) -> None:
    assert balance(server, key, **{"X-Forwarded-For": "unknown"})["errorId"] == 0
