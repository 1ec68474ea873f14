"""Bans and blocks (spec §4): each rule, its record, expiry, extension and lifting."""

from __future__ import annotations

from typing import Any

from tests.helpers import LiveServer, image_task

BAN_RULES = {"unknown_key_ban_threshold": 5, "violation_block_threshold": 4,
             "ban_duration_s": 600}


def balance(server: LiveServer, key: str) -> dict[str, Any]:
    return server.call("getBalance", {"clientKey": key})


def bans(server: LiveServer) -> list[Any]:
    return server.admin(lambda store: store.bans(server.clock()))


def test_unknown_key_storm_bans_the_ip_for_every_key(make_server: Any) -> None:
    server = make_server(**BAN_RULES)
    good = server.new_account("1")
    for _ in range(4):
        assert balance(server, "f" * 32)["errorCode"] == "ERROR_KEY_DOES_NOT_EXIST"
    assert balance(server, good)["errorId"] == 0  # not yet
    assert balance(server, "f" * 32)["errorCode"] == "ERROR_KEY_DOES_NOT_EXIST"  # 5th: ban
    assert balance(server, good)["errorCode"] == "ERROR_IP_BANNED"
    assert balance(server, "f" * 32)["errorCode"] == "ERROR_IP_BANNED"
    created = server.call("createTask", {"clientKey": good, "task": image_task()})
    assert created["errorCode"] == "ERROR_IP_BANNED" and created["taskId"] == 0
    [ban] = bans(server)
    assert (ban.scope, ban.ip, ban.account_id) == ("ip", "127.0.0.1", None)
    assert "unknown keys" in ban.reason
    assert ban.ends_at - ban.started_at == 600


def test_ip_ban_expires(make_server: Any) -> None:
    server = make_server(**BAN_RULES)
    good = server.new_account("1")
    for _ in range(5):
        balance(server, "f" * 32)
    assert balance(server, good)["errorCode"] == "ERROR_IP_BANNED"
    server.clock.advance(601)
    assert balance(server, good)["errorId"] == 0


def test_ip_ban_is_extended_while_unknown_keys_continue(make_server: Any) -> None:
    server = make_server(**BAN_RULES)
    for _ in range(5):
        balance(server, "f" * 32)
    [ban] = bans(server)
    server.clock.advance(120)  # a new counting window
    for _ in range(5):
        balance(server, "e" * 32)
    [extended] = bans(server)
    assert extended.id == ban.id and extended.ends_at == ban.ends_at + 120


def test_operator_lifts_an_ip_ban(make_server: Any) -> None:
    server = make_server(**BAN_RULES)
    good = server.new_account("1")
    for _ in range(5):
        balance(server, "f" * 32)
    [ban] = bans(server)
    assert server.admin(lambda store: store.lift_ban(ban.id, server.clock(), "operator"))
    assert balance(server, good)["errorId"] == 0
    history = server.admin(lambda store: store.bans(server.clock(), active_only=False))
    assert history[0].lifted_at is not None


def test_zero_balance_storm_blocks_that_account_from_that_ip(make_server: Any) -> None:
    server = make_server(**BAN_RULES)
    broke = server.new_account("0")
    other = server.new_account("1")
    for _ in range(4):
        answer = server.call("createTask", {"clientKey": broke, "task": image_task()})
        assert answer["errorCode"] == "ERROR_ZERO_BALANCE"
    assert balance(server, broke)["errorCode"] == "ERROR_IP_BLOCKED"
    assert balance(server, other)["errorId"] == 0  # other accounts are untouched
    [block] = bans(server)
    assert block.scope == "account_ip" and block.account_id is not None
    assert "zero balance" in block.reason


def test_unknown_task_id_polls_block_the_account(make_server: Any) -> None:
    server = make_server(**BAN_RULES)
    key = server.new_account("1")
    for task_id in range(1, 5):
        answer = server.call("getTaskResult", {"clientKey": key, "taskId": task_id})
        assert answer["errorCode"] == "ERROR_NO_SUCH_CAPCHA_ID"
    answer = server.call("getTaskResult", {"clientKey": key, "taskId": 5})
    assert answer["errorCode"] == "ERROR_IP_BLOCKED"
    assert "unknown task ids" in bans(server)[0].reason


def test_polls_beyond_the_limit_count_as_violations(make_server: Any) -> None:
    server = make_server(max_polls_per_task=2, **BAN_RULES)
    key = server.new_account("1")
    task_id = server.call("createTask", {"clientKey": key, "task": image_task()})["taskId"]
    codes = []
    for _ in range(8):
        server.clock.advance(0.5)
        codes.append(server.call("getTaskResult", {"clientKey": key, "taskId": task_id}
                                 ).get("errorCode"))
    assert "ERROR_TOO_MUCH_REQUESTS" in codes
    assert codes[-1] == "ERROR_IP_BLOCKED"
    assert "polls" in bans(server)[0].reason


def test_account_block_expires_and_can_be_lifted(make_server: Any) -> None:
    server = make_server(**BAN_RULES)
    key = server.new_account("1")
    for task_id in range(1, 5):
        server.call("getTaskResult", {"clientKey": key, "taskId": task_id})
    assert balance(server, key)["errorCode"] == "ERROR_IP_BLOCKED"
    server.clock.advance(601)
    assert balance(server, key)["errorId"] == 0
    for task_id in range(1, 5):
        server.call("getTaskResult", {"clientKey": key, "taskId": task_id})
    assert balance(server, key)["errorCode"] == "ERROR_IP_BLOCKED"
    [block] = bans(server)
    server.admin(lambda store: store.lift_ban(block.id, server.clock(), "operator"))
    assert balance(server, key)["errorId"] == 0


def test_bans_are_visible_with_the_account(make_server: Any) -> None:
    server = make_server(**BAN_RULES)
    key = server.new_account("0")
    for _ in range(4):
        server.call("createTask", {"clientKey": key, "task": image_task()})

    async def account_bans(store: Any) -> list[Any]:
        account = await store.account_for_key(key)
        return await store.bans(server.clock(), active_only=False, account_id=account.id)

    assert len(server.admin(account_bans)) == 1
