"""Issue 13, finding 1: task objects are bounded before anything is stored, fields the
type does not take are never stored, and a task no worker can be sent never fails a
lease batch."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from capd.constants import MAX_TASK_DEPTH, MAX_TASK_FIELDS_BYTES, MAX_UNKNOWN_FIELDS
from capd.errors import CapdError
from capd.service import CreateTaskRequest
from capd.service.messages import Parsed
from capd.store.base import Store, TaskState
from capd.workers import Lease, LeaseRequest, new_worker_token, token_digest
from tests.helpers import SITEKEY, FakeClock, b64, captcha_png
from tests.service.kit import PUBLIC_IP, World, run, world

TYPE = "RecaptchaV2TaskProxyless"


@pytest.fixture
def w(store: Store, clock: FakeClock, tmp_path: Path) -> World:
    built = world(store, clock, tmp_path)
    built.dispatcher.attach("ImageToTextTask")  # a built-in solver serves images
    return built


def task(**extra: Any) -> dict[str, Any]:
    return {"type": TYPE, "websiteURL": "https://example.com/", "websiteKey": SITEKEY,
            **extra}


def nested(levels: int) -> Any:
    value: Any = "x"
    for _ in range(levels):
        value = {"a": value}
    return value


def create(w: World, key: str, body: dict[str, Any]) -> int:
    run(w.store.note_workers([body["type"]], w.clock()))
    return run(w.service.create_task(CreateTaskRequest(key, PUBLIC_IP, body))).task_id


def refusal(w: World, key: str, body: dict[str, Any]) -> CapdError:
    with pytest.raises(CapdError) as caught:
        create(w, key, body)
    return caught.value


def test_unknown_field_nested_past_the_depth_is_a_bad_parameter(w: World) -> None:
    error = refusal(w, w.account(), task(junk=nested(252)))
    assert error.code == "ERROR_BAD_PARAMETERS" and "'junk'" in error.description


def test_known_object_field_nested_past_the_depth_is_a_bad_parameter(w: World) -> None:
    body = {**task(), "type": "RecaptchaV2EnterpriseTaskProxyless",
            "enterprisePayload": nested(MAX_TASK_DEPTH + 1)}
    assert refusal(w, w.account(), body).code == "ERROR_BAD_PARAMETERS"


def test_nesting_up_to_the_depth_is_accepted(w: World) -> None:
    body = {**task(), "type": "RecaptchaV2EnterpriseTaskProxyless",
            "enterprisePayload": nested(MAX_TASK_DEPTH)}
    assert create(w, w.account(), body) > 0


def test_too_many_unknown_fields_is_a_bad_parameter(w: World) -> None:
    extra = {f"f{i}": 1 for i in range(MAX_UNKNOWN_FIELDS + 1)}
    error = refusal(w, w.account(), task(**extra))
    assert error.code == "ERROR_BAD_PARAMETERS" and "'task'" in error.description


def test_oversized_field_is_a_bad_parameter_naming_it(w: World) -> None:
    error = refusal(w, w.account(), task(junk="x" * MAX_TASK_FIELDS_BYTES))
    assert error.code == "ERROR_BAD_PARAMETERS" and "'junk'" in error.description


def test_unknown_fields_are_not_stored(w: World) -> None:
    task_id = create(w, w.account(), task(junk="x" * 1000, proxyType="http",
                                           proxyAddress="8.8.8.8", proxyPort=8080))
    stored = run(w.store.get_task(task_id))
    assert stored is not None and "junk" not in stored.payload
    assert stored.payload == task(proxyType="http", proxyAddress="8.8.8.8", proxyPort=8080)


def test_image_is_bounded_by_the_image_rules_not_the_field_limit(w: World) -> None:
    body = {"type": "ImageToTextTask", "body": b64(captcha_png("ab12")),
            "note": "y" * (MAX_TASK_FIELDS_BYTES // 2)}
    assert create(w, w.account(), body) > 0


def lease_request(raw: str, limit: int) -> LeaseRequest:
    return LeaseRequest(raw, Parsed([TYPE]), Parsed(limit), Parsed(0.0))


def test_unrenderable_task_is_failed_and_the_batch_still_served(w: World) -> None:
    raw = new_worker_token()
    run(w.store.create_worker_token(token_digest(raw), "unit", None, w.clock()))
    key = w.account()
    bad, good = create(w, key, task()), create(w, key, task())

    def render(lease: Lease) -> bytes:
        if lease.task_id == bad:
            raise ValueError("cannot encode")
        return b"{}"

    leases = run(w.desk.lease(lease_request(raw, 2), render=render))
    assert [(x.task_id, x.rendered) for x in leases] == [(good, b"{}")]
    failed = run(w.store.get_task(bad))
    assert failed is not None and failed.state == TaskState.FAILED
    assert w.money(key)[0] == 10 * 10**8  # nothing charged
