"""Schema-driven fuzzing of every method in /openapi.json (issue 7 §1) with schemathesis,
against a live capd on loopback (SQLite: the HTTP surface is the same on both backends).

For each operation (the JSON API, the worker protocol and the 2captcha door), generated
requests (valid and invalid) must never get a 5xx, must get a
JSON body, and the answer must fit the documented schema and status codes. A share of the
generated requests carries a real key, task id, worker token and lease id so the checks
reach past authentication.
"""

from __future__ import annotations

import zlib
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import settings
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_schema_conformance,
    status_code_conformance,
)

from capd.api.openapi import openapi_document
from tests.hardening.conftest import budget
from tests.helpers import LiveServer, image_task

pytestmark = pytest.mark.parametrize("backend", ["sqlite"], indirect=True)

schema = schemathesis.openapi.from_dict(openapi_document())
CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]
FUZZ_SETTINGS = {
    # nothing in the fuzz run should hit the ban rules before the checks see real answers
    "unknown_key_ban_threshold": 10**9, "violation_block_threshold": 10**9,
    "max_polls_per_s": 10**6, "max_polls_per_task": 10**6,
}


@pytest.fixture
def world(make_server: Any) -> dict[str, Any]:
    """A live server with one funded key, a solved task, a worker token and a live lease."""
    server: LiveServer = make_server(**FUZZ_SETTINGS)
    key = server.new_account("10")
    task_id = server.call("createTask", {"clientKey": key, "task": image_task()})["taskId"]
    server.wait_result(key, task_id)
    token = server.new_worker_token()
    url = "https://example.com/"
    created = server.call("createTask", {"clientKey": key, "task": {
        "type": "TurnstileTaskProxyless", "websiteURL": url, "websiteKey": "0x4AAAAAAA"}})
    lease_id = "1.x"
    leased = server.call("worker/v1/lease", {"workerToken": token,
                                             "types": ["TurnstileTaskProxyless"], "max": 1})
    if created.get("errorId") == 0 and leased.get("leases"):
        lease_id = leased["leases"][0]["leaseId"]
    return {"server": server, "clientKey": key, "taskId": task_id, "workerToken": token,
            "leaseId": lease_id}


def _substitute(case: Any, world: dict[str, Any]) -> None:
    """Give about half the generated requests real credentials and ids."""
    body, query = case.body, case.query
    if isinstance(body, dict) and not zlib.crc32(repr(body).encode()) % 2:
        for name in ("clientKey", "taskId", "workerToken", "leaseId"):
            if name in body:
                body[name] = world[name]
    if isinstance(query, dict) and not zlib.crc32(repr(query).encode()) % 2:
        query["key"] = world["clientKey"]
        if "id" in query:
            query["id"] = str(world["taskId"])


def test_the_served_document_is_the_fuzzed_one(world: dict[str, Any]) -> None:
    served = httpx.get(f"{world['server'].url}/openapi.json").json()
    assert served == openapi_document()
    assert set(served["paths"]) >= {
        "/createTask", "/getTaskResult", "/getBalance", "/reportIncorrectImageCaptcha",
        "/reportIncorrectTokenCaptcha", "/reportIncorrectRecaptcha", "/worker/v1/lease",
        "/worker/v1/extend", "/worker/v1/complete", "/in.php", "/res.php"}


@schema.parametrize()
@settings(settings.get_profile("capd-hardening"), max_examples=budget(25))
def test_api_keeps_its_documented_shape(case: Any, world: dict[str, Any]) -> None:
    _substitute(case, world)
    if isinstance(case.body, dict) and "waitSeconds" in case.body:
        case.body["waitSeconds"] = 0  # a long-poll would only slow the run down
    case.call_and_validate(base_url=world["server"].url, checks=CHECKS, timeout=30)
