"""IP whitelist and the client address behind trusted proxies (spec §4)."""

from __future__ import annotations

from typing import Any

from tests.helpers import LiveServer, image_task


def whitelist(server: LiveServer, key: str, network: str) -> None:
    async def add(store: Any) -> None:
        account = await store.account_for_key(key)
        await store.whitelist_add(account.id, network)

    server.admin(add)


def balance(server: LiveServer, key: str, **headers: str) -> dict[str, Any]:
    return server.call("getBalance", {"clientKey": key}, headers=headers)


def test_empty_whitelist_allows_any_address(server: LiveServer, key: str) -> None:
    assert balance(server, key)["errorId"] == 0


def test_address_outside_the_whitelist_is_refused(server: LiveServer, key: str) -> None:
    whitelist(server, key, "10.0.0.0/8")
    assert balance(server, key)["errorCode"] == "ERROR_IP_NOT_ALLOWED"
    created = server.call("createTask", {"clientKey": key, "task": image_task()})
    assert created["errorCode"] == "ERROR_IP_NOT_ALLOWED"


def test_address_inside_the_whitelist_is_served(server: LiveServer, key: str) -> None:
    whitelist(server, key, "10.0.0.0/8")
    whitelist(server, key, "127.0.0.0/30")
    assert balance(server, key)["errorId"] == 0


def test_forwarded_for_from_an_untrusted_peer_is_ignored(server: LiveServer, key: str) -> None:
    whitelist(server, key, "203.0.113.0/24")
    answer = balance(server, key, **{"X-Forwarded-For": "203.0.113.7"})
    assert answer["errorCode"] == "ERROR_IP_NOT_ALLOWED"


def test_trusted_proxy_passes_the_client_address(make_server: Any) -> None:
    server = make_server(trusted_proxies="127.0.0.1/32")
    key = server.new_account("1")
    whitelist(server, key, "203.0.113.0/24")
    assert balance(server, key, **{"X-Forwarded-For": "203.0.113.7"})["errorId"] == 0
    assert balance(server, key)["errorCode"] == "ERROR_IP_NOT_ALLOWED"  # no header: the peer


def test_spoofed_left_entries_behind_a_trusted_proxy_are_ignored(make_server: Any) -> None:
    server = make_server(trusted_proxies="127.0.0.1/32,10.0.0.0/8")
    key = server.new_account("1")
    whitelist(server, key, "203.0.113.0/24")
    # the client wrote the first entry itself; our proxies appended the rest
    spoofed = {"X-Forwarded-For": "203.0.113.9, 198.51.100.4, 10.1.1.1"}
    assert balance(server, key, **spoofed)["errorCode"] == "ERROR_IP_NOT_ALLOWED"
    honest = {"X-Forwarded-For": "198.51.100.4, 203.0.113.9, 10.1.1.1"}
    assert balance(server, key, **honest)["errorId"] == 0


def test_task_records_the_client_address(make_server: Any) -> None:
    server = make_server(trusted_proxies="127.0.0.1")
    key = server.new_account("1")
    task_id = server.call("createTask", {"clientKey": key, "task": image_task()},
                          headers={"X-Forwarded-For": "198.51.100.23"})["taskId"]
    assert server.wait_result(key, task_id)["ip"] == "198.51.100.23"
