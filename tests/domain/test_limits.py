"""The pure limit rules (spec §4): what a count means, with no store and no clock."""

from __future__ import annotations

from capd.domain.limits import (
    LimitRules,
    PollVerdict,
    ban_ends_at,
    bans_ip,
    blocks_account_ip,
    poll_refusal,
    poll_verdict,
)

RULES = LimitRules(max_polls_per_task=120, max_polls_per_s=10, ban_duration_s=600,
                   unknown_key_ban_threshold=30, violation_block_threshold=20,
                   violation_window_s=60, poll_window_s=480)


def test_poll_within_limits_is_allowed() -> None:
    assert poll_verdict(120, 10, RULES) == PollVerdict.ALLOWED


def test_poll_past_the_total_is_too_many() -> None:
    assert poll_verdict(121, 1, RULES) == PollVerdict.TOO_MANY


def test_poll_past_the_rate_is_too_fast() -> None:
    assert poll_verdict(5, 11, RULES) == PollVerdict.TOO_FAST


def test_both_refusals_answer_too_much_requests() -> None:
    for verdict in (PollVerdict.TOO_MANY, PollVerdict.TOO_FAST):
        assert poll_refusal(verdict, RULES).code == "ERROR_TOO_MUCH_REQUESTS"


def test_thresholds_ban_and_block_at_their_count() -> None:
    assert not bans_ip(29, RULES) and bans_ip(30, RULES)
    assert not blocks_account_ip(19, RULES) and blocks_account_ip(20, RULES)


def test_ban_lasts_its_duration() -> None:
    assert ban_ends_at(1000.0, RULES) == 1600.0
