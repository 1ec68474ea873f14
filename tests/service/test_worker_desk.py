"""The WorkerDesk (spec §7) called directly: lease, extend and complete once, with a fake
clock for lease expiry."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from capd.errors import BadParameter, CapdError
from capd.service import CreateTaskRequest, ResultState, TaskResultRequest
from capd.service.messages import Parsed
from capd.store.base import Store
from capd.workers import (
    CompleteRequest,
    ExtendRequest,
    Lease,
    LeaseRequest,
    new_worker_token,
    token_digest,
)
from tests.helpers import SITEKEY, FakeClock
from tests.service.kit import PUBLIC_IP, World, refused_code, run, world

TYPE = "RecaptchaV2TaskProxyless"


@pytest.fixture
def w(store: Store, clock: FakeClock, tmp_path: Path) -> World:
    return world(store, clock, tmp_path, worker_lease_s=60)


def token(w: World, types: tuple[str, ...] | None = None) -> str:
    raw = new_worker_token()
    run(w.store.create_worker_token(token_digest(raw), "unit", types, w.clock()))
    return raw


def lease_request(raw: str | None, types: Any = (TYPE,), limit: int = 1) -> LeaseRequest:
    return LeaseRequest(raw, Parsed(list(types) if types is not None else None),
                        Parsed(limit), Parsed(0.0))


def queued_task(w: World, key: str) -> int:
    run(w.store.note_workers([TYPE], w.clock()))
    task = {"type": TYPE, "websiteURL": "https://example.com/", "websiteKey": SITEKEY}
    return run(w.service.create_task(CreateTaskRequest(key, PUBLIC_IP, task))).task_id


def leased(w: World, raw: str) -> tuple[str, Lease]:
    key = w.account()
    task_id = queued_task(w, key)
    leases = run(w.desk.lease(lease_request(raw)))
    assert [x.task_id for x in leases] == [task_id]
    return key, leases[0]


def test_lease_hands_out_the_task_as_sent(w: World) -> None:
    raw = token(w)
    _, lease = leased(w, raw)
    assert lease.lease_id == f"{lease.task_id}.secret"
    assert lease.task["websiteKey"] == SITEKEY
    assert lease.expires_at == pytest.approx(w.clock() + 60)


def test_lease_with_nothing_queued_is_empty(w: World) -> None:
    assert run(w.desk.lease(lease_request(token(w)))) == []


def test_unknown_token_is_invalid(w: World) -> None:
    assert refused_code(w.desk.lease(lease_request("f" * 48))) == "ERROR_WORKER_TOKEN_INVALID"


def test_token_outside_its_types_is_invalid(w: World) -> None:
    raw = token(w, ("ImageToTextTask",))
    assert refused_code(w.desk.lease(lease_request(raw))) == "ERROR_WORKER_TOKEN_INVALID"


def test_malformed_types_answer_before_the_token(w: World) -> None:
    req = LeaseRequest("f" * 48, Parsed(None, BadParameter("types")), Parsed(1), Parsed(0.0))
    assert refused_code(w.desk.lease(req)) == "ERROR_BAD_PARAMETERS"


def test_unknown_type_answers_before_the_token(w: World) -> None:
    assert refused_code(w.desk.lease(lease_request("f" * 48, ["Nope"]))) == (
        "ERROR_BAD_PARAMETERS")


def test_missing_types_answer_after_the_token(w: World) -> None:
    assert refused_code(w.desk.lease(lease_request("f" * 48, None))) == (
        "ERROR_WORKER_TOKEN_INVALID")
    assert refused_code(w.desk.lease(lease_request(token(w), None))) == "ERROR_BAD_PARAMETERS"


def test_complete_once_solves_the_task(w: World) -> None:
    raw = token(w)
    key, lease = leased(w, raw)
    solution = {"gRecaptchaResponse": "tok"}
    run(w.desk.complete(CompleteRequest(raw, lease.lease_id, solution)))
    result = run(w.service.get_task_result(TaskResultRequest(key, PUBLIC_IP, lease.task_id)))
    assert (result.state, result.solution) == (ResultState.READY, solution)


def test_second_complete_is_lease_not_found(w: World) -> None:
    raw = token(w)
    _, lease = leased(w, raw)
    run(w.desk.complete(CompleteRequest(raw, lease.lease_id, {"gRecaptchaResponse": "a"})))
    assert refused_code(w.desk.complete(CompleteRequest(
        raw, lease.lease_id, error_code="ERROR_CAPTCHA_UNSOLVABLE"))) == "ERROR_LEASE_NOT_FOUND"


def test_solution_of_the_wrong_shape_is_bad_solution(w: World) -> None:
    raw = token(w)
    _, lease = leased(w, raw)
    assert refused_code(w.desk.complete(CompleteRequest(raw, lease.lease_id, {"x": "y"}))) == (
        "ERROR_BAD_SOLUTION")


def test_complete_needs_exactly_one_of_solution_and_error(w: World) -> None:
    raw = token(w)
    _, lease = leased(w, raw)
    assert refused_code(w.desk.complete(CompleteRequest(raw, lease.lease_id))) == (
        "ERROR_BAD_PARAMETERS")
    assert refused_code(w.desk.complete(CompleteRequest(
        raw, lease.lease_id, error_code=["not", "a", "code"]))) == "ERROR_BAD_PARAMETERS"


def test_worker_failure_fails_the_task_uncharged(w: World) -> None:
    raw = token(w)
    key, lease = leased(w, raw)
    before = w.money(key)[0]
    run(w.desk.complete(CompleteRequest(raw, lease.lease_id,
                                        error_code="ERROR_RECAPTCHA_INVALID_SITEKEY")))
    assert w.money(key) == (before, 0)


def test_extend_moves_the_lease_end(w: World) -> None:
    raw = token(w)
    _, lease = leased(w, raw)
    w.clock.advance(30)
    until = run(w.desk.extend(ExtendRequest(raw, lease.lease_id, Parsed(90.0))))
    assert until == pytest.approx(w.clock() + 90)


def test_expired_lease_is_not_found(w: World) -> None:
    raw = token(w)
    _, lease = leased(w, raw)
    w.clock.advance(61)
    assert refused_code(w.desk.extend(ExtendRequest(raw, lease.lease_id, Parsed(None)))) == (
        "ERROR_LEASE_NOT_FOUND")
    assert refused_code(w.desk.complete(CompleteRequest(
        raw, lease.lease_id, {"gRecaptchaResponse": "late"}))) == "ERROR_LEASE_NOT_FOUND"


def test_expired_lease_goes_back_to_the_queue(w: World) -> None:
    raw = token(w)
    _, first = leased(w, raw)
    w.clock.advance(61)
    again = run(w.desk.lease(lease_request(raw)))
    assert [x.task_id for x in again] == [first.task_id]


def test_foreign_lease_secret_is_not_found(w: World) -> None:
    raw = token(w)
    _, lease = leased(w, raw)
    assert refused_code(w.desk.complete(CompleteRequest(
        raw, f"{lease.task_id}.other", {"gRecaptchaResponse": "a"}))) == "ERROR_LEASE_NOT_FOUND"


# -- issue 13, finding 2: leases belong to the token that took them ---------------------------
def test_revoked_token_claims_nothing_after_its_long_poll_wait(w: World) -> None:
    raw = token(w)
    key = w.account()
    run(w.store.note_workers([TYPE], w.clock()))

    async def scenario() -> tuple[str | None, list[Lease]]:
        poll = asyncio.ensure_future(w.desk.lease(LeaseRequest(
            raw, Parsed([TYPE]), Parsed(1), Parsed(30.0))))
        while not w.dispatcher._waiters:  # the long-poll is waiting for work
            await asyncio.sleep(0)
        await w.store.revoke_worker_token(token_digest(raw), w.clock())
        task = {"type": TYPE, "websiteURL": "https://example.com/", "websiteKey": SITEKEY}
        await w.service.create_task(CreateTaskRequest(key, PUBLIC_IP, task))  # wakes it
        try:
            return None, await poll
        except CapdError as error:
            return error.code, []

    code, leases = run(scenario())
    assert (code, leases) == ("ERROR_WORKER_TOKEN_INVALID", [])


def test_another_token_cannot_extend_a_lease(w: World) -> None:
    raw, other = token(w), token(w)
    _, lease = leased(w, raw)
    assert refused_code(w.desk.extend(ExtendRequest(other, lease.lease_id, Parsed(300.0)))) \
        == "ERROR_LEASE_NOT_FOUND"


def test_another_token_cannot_complete_a_lease(w: World) -> None:
    raw, other = token(w), token(w)
    _, lease = leased(w, raw)
    assert refused_code(w.desk.complete(CompleteRequest(
        other, lease.lease_id, {"gRecaptchaResponse": "a"}))) == "ERROR_LEASE_NOT_FOUND"
    run(w.desk.complete(CompleteRequest(raw, lease.lease_id, {"gRecaptchaResponse": "a"})))


def test_extend_never_shortens_a_lease(w: World) -> None:
    raw = token(w)
    _, lease = leased(w, raw)
    until = run(w.desk.extend(ExtendRequest(raw, lease.lease_id, Parsed(1.0))))
    assert until == pytest.approx(lease.expires_at, abs=0.01)


def test_release_ends_the_lease_now(w: World) -> None:
    raw = token(w)
    _, lease = leased(w, raw)
    until = run(w.desk.extend(ExtendRequest(raw, lease.lease_id, Parsed(None), Parsed(True))))
    assert until == pytest.approx(w.clock(), abs=0.01)
    again = run(w.desk.lease(lease_request(raw)))
    assert [x.task_id for x in again] == [lease.task_id]


def test_solution_nested_past_the_depth_is_bad_solution(w: World) -> None:
    raw = token(w)
    _, lease = leased(w, raw)
    deep: Any = "x"
    for _ in range(300):
        deep = {"a": deep}
    assert refused_code(w.desk.complete(CompleteRequest(
        raw, lease.lease_id, {"gRecaptchaResponse": "t", "extra": deep}))) == (
        "ERROR_BAD_SOLUTION")
