"""The worker protocol on PostgreSQL with nodes whose clocks are an hour off (issue 12):
leases end by the database's clock, so a node ahead does not end a live lease early and
a node behind does not keep an ended one."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

from capd.store import open_store
from tests.helpers import FakeClock, LiveServer, make_settings

TURNSTILE = {"type": "TurnstileTaskProxyless", "websiteURL": "https://example.com/",
             "websiteKey": "0x4AAAAAAA"}
TYPES = ["TurnstileTaskProxyless"]
HOUR = 3600.0


@pytest.fixture
def nodes(tmp_path: Any, pg_url: str) -> Iterator[tuple[LiveServer, LiveServer]]:
    """Two serving nodes on one PostgreSQL database: one an hour ahead, one behind."""
    started = []
    for offset in (HOUR, -HOUR):
        server = LiveServer(make_settings(tmp_path, database_url=pg_url),
                            FakeClock(time.time() + offset))
        server.start(None, store=open_store(pg_url))  # the database's clock rules leases
        started.append(server)
    yield started[0], started[1]
    for server in started:
        server.stop()


def leased(server: LiveServer, token: str) -> list[dict[str, Any]]:
    answer = server.call("worker/v1/lease", {"workerToken": token, "types": TYPES,
                                             "waitSeconds": 0})
    assert answer["errorId"] == 0, answer
    leases: list[dict[str, Any]] = answer["leases"]
    return leases


def created(server: LiveServer, key: str) -> int:
    answer = server.call("createTask", {"clientKey": key, "task": TURNSTILE})
    assert answer["errorId"] == 0, answer
    task_id: int = answer["taskId"]
    return task_id


def test_node_ahead_keeps_a_live_lease(nodes: tuple[LiveServer, LiveServer]) -> None:
    ahead, behind = nodes
    key = behind.new_account("1")
    token, other = behind.new_worker_token(), behind.new_worker_token()
    assert leased(behind, token) == []  # the type is served now
    task_id = created(behind, key)
    [lease] = leased(behind, token)
    assert leased(ahead, other) == []  # an hour ahead, the lease is still live
    extended = ahead.call("worker/v1/extend", {"workerToken": token,
                                                "leaseId": lease["leaseId"], "seconds": 120})
    assert extended["errorId"] == 0, extended
    assert abs(extended["leaseExpiresAt"] - (time.time() + 120)) < 30
    done = ahead.call("worker/v1/complete", {"workerToken": token, "leaseId": lease["leaseId"],
                                              "solution": {"token": "t"}})
    assert done["errorId"] == 0, done
    result = behind.call("getTaskResult", {"clientKey": key, "taskId": task_id})
    assert result["status"] == "ready", result


def test_node_behind_does_not_keep_a_released_lease(nodes: tuple[LiveServer, LiveServer]
                                                     ) -> None:
    ahead, behind = nodes
    key = ahead.new_account("1")
    token, other = ahead.new_worker_token(), ahead.new_worker_token()
    assert leased(ahead, token) == []  # the type is served now
    created(ahead, key)
    [lease] = leased(ahead, token)
    released = ahead.call("worker/v1/extend", {"workerToken": token,
                                                "leaseId": lease["leaseId"], "release": True})
    assert released["errorId"] == 0, released
    # an hour behind, this node would see the lease as live for an hour by its own clock
    late = behind.call("worker/v1/complete", {"workerToken": token,
                                               "leaseId": lease["leaseId"],
                                               "solution": {"token": "t"}})
    assert late["errorCode"] == "ERROR_LEASE_NOT_FOUND", late
    [again] = leased(behind, other)
    assert again["taskId"] == lease["taskId"]
