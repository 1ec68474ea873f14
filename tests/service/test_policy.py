"""Poll limits, bans and blocks (spec §4) through capd.policy, with a fake clock: windows
and ban ends are reached by moving the clock, never by sleeping."""

from __future__ import annotations

from dataclasses import replace

import pytest

from capd.domain.limits import ZERO_BALANCE, LimitRules
from capd.policy import Policy
from capd.store.base import Store
from tests.helpers import FakeClock
from tests.service.kit import OTHER_IP, PUBLIC_IP, refused_code, run

RULES = LimitRules(max_polls_per_task=3, max_polls_per_s=2, ban_duration_s=600,
                   unknown_key_ban_threshold=3, violation_block_threshold=3,
                   violation_window_s=60, poll_window_s=3600)


@pytest.fixture
def policy(store: Store, clock: FakeClock) -> Policy:
    return Policy(store, RULES, clock)


def poll(policy: Policy, clock: FakeClock, task_id: int = 7) -> None:
    run(policy.check_poll(task_id, 1, PUBLIC_IP))


def test_polls_up_to_the_rate_are_allowed(policy: Policy, clock: FakeClock) -> None:
    poll(policy, clock)
    poll(policy, clock)


def test_polls_faster_than_the_rate_are_too_much(store: Store, clock: FakeClock) -> None:
    policy = Policy(store, replace(RULES, max_polls_per_task=100), clock)
    poll(policy, clock)
    poll(policy, clock)
    assert refused_code(policy.check_poll(7, 1, PUBLIC_IP)) == "ERROR_TOO_MUCH_REQUESTS"
    clock.advance(1)
    poll(policy, clock)  # a new second
    assert run(store.incr_counter(f"violation:1:{PUBLIC_IP}", 60, clock())) == 1  # none


def test_polls_past_the_total_are_too_much_and_a_violation(policy: Policy, store: Store,
                                                           clock: FakeClock) -> None:
    for _ in range(3):
        poll(policy, clock)
        clock.advance(1)
    assert refused_code(policy.check_poll(7, 1, PUBLIC_IP)) == "ERROR_TOO_MUCH_REQUESTS"
    assert run(store.incr_counter(f"violation:1:{PUBLIC_IP}", 60, clock())) == 2


def test_poll_total_is_per_task(policy: Policy, clock: FakeClock) -> None:
    for _ in range(3):
        poll(policy, clock)
        clock.advance(1)
    poll(policy, clock, task_id=8)


def test_unknown_keys_ban_the_ip_at_the_threshold(policy: Policy, clock: FakeClock) -> None:
    for _ in range(3):
        run(policy.check_ip_ban(PUBLIC_IP, key_known=False))
        run(policy.note_unknown_key(PUBLIC_IP))
    assert refused_code(policy.check_ip_ban(PUBLIC_IP, key_known=True)) == "ERROR_IP_BANNED"
    run(policy.check_ip_ban(OTHER_IP, key_known=True))  # another IP is not banned


def test_ip_ban_ends_after_its_duration(policy: Policy, clock: FakeClock) -> None:
    for _ in range(3):
        run(policy.note_unknown_key(PUBLIC_IP))
    clock.advance(RULES.ban_duration_s + 1)
    run(policy.check_ip_ban(PUBLIC_IP, key_known=True))


def test_unknown_keys_during_a_ban_extend_it(policy: Policy, clock: FakeClock) -> None:
    for _ in range(3):
        run(policy.note_unknown_key(PUBLIC_IP))
    clock.advance(RULES.ban_duration_s - 10)
    for _ in range(3):
        assert refused_code(policy.check_ip_ban(PUBLIC_IP, key_known=False)) == (
            "ERROR_IP_BANNED")
    clock.advance(20)  # past the first ban's end, inside the extension
    assert refused_code(policy.check_ip_ban(PUBLIC_IP, key_known=True)) == "ERROR_IP_BANNED"


def test_violations_block_the_account_from_that_ip(policy: Policy, store: Store,
                                                   clock: FakeClock) -> None:
    for _ in range(3):
        run(policy.note_violation(1, PUBLIC_IP, ZERO_BALANCE))
    assert refused_code(policy.check_account_block(1, PUBLIC_IP)) == "ERROR_IP_BLOCKED"
    run(policy.check_account_block(1, OTHER_IP))
    run(policy.check_account_block(2, PUBLIC_IP))
    bans = run(store.bans(clock()))
    assert [(b.scope, b.reason) for b in bans] == [("account_ip", ZERO_BALANCE)]


def test_violations_outside_the_window_do_not_add_up(policy: Policy, clock: FakeClock) -> None:
    for _ in range(2):
        run(policy.note_violation(1, PUBLIC_IP, ZERO_BALANCE))
    clock.advance(RULES.violation_window_s + 1)
    run(policy.note_violation(1, PUBLIC_IP, ZERO_BALANCE))
    run(policy.check_account_block(1, PUBLIC_IP))
