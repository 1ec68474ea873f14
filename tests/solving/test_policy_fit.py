"""The combined engine's policy fit (training/evaluate_real.fit_policy) never trades the
meaning of recognizingThreshold 90 for speed: a cheaper policy as accurate as the best
one is refused when one sure wrong answer caps its confidence map below 90."""

from __future__ import annotations

from capd.domain.tasks import ImageSpec
from capd.solving.ocr.base import Reading
from training.evaluate import fit_isotonic
from training.evaluate_real import Item, fit_policy, sure_share


def _case(cheap_sure_wrong: bool) -> tuple[list[Item], dict, dict]:
    """22 images read by a cheap engine (1 ms) and a slower one (10 ms). Both read 20 of
    them right. On one (Y) the cheap engine is unsure and wrong, the slow one right. On
    another (X) both are wrong: the cheap engine either very sure or unsure."""
    spec = ImageSpec(case_sensitive=False)
    items = [Item("REAL", "s", f"k{i}", b"", f"ab{i}", spec) for i in range(22)]
    cheap = [Reading(f"ab{i}", 0.95) for i in range(20)]
    slow = [Reading(f"ab{i}", 0.95) for i in range(20)]
    cheap.append(Reading("zz", 0.2))  # Y
    slow.append(Reading("ab20", 0.9))
    cheap.append(Reading("qq", 0.999 if cheap_sure_wrong else 0.1))  # X
    slow.append(Reading("ww", 0.1))
    answers = {"cheap": cheap, "slow": slow}
    ms = {"cheap": [1.0] * 22, "slow": [10.0] * 22}
    return items, answers, ms


def test_a_cheaper_policy_capped_below_90_by_a_sure_wrong_answer_is_refused() -> None:
    items, answers, ms = _case(cheap_sure_wrong=True)
    policy = fit_policy(["cheap", "slow"], items, answers, ms, tolerance=0.005)
    # cheap first would read 21 of 22 as well, but its surest answer is wrong
    assert policy.members[0] == "slow"
    assert policy.calibration is not None and policy.calibration(0.95) >= 0.9


def test_the_cheaper_policy_is_kept_when_its_map_reaches_90() -> None:
    items, answers, ms = _case(cheap_sure_wrong=False)
    policy = fit_policy(["cheap", "slow"], items, answers, ms, tolerance=0.005)
    assert policy.members[0] == "cheap"
    assert policy.calibration is not None and policy.calibration(0.95) >= 0.9


def test_sure_share_counts_what_threshold_90_returns() -> None:
    rights = [(0.95 + i * 0.001, True) for i in range(20)]
    xs, ys = fit_isotonic(rights)
    assert sure_share(rights, xs, ys) == 1.0
    capped = [*rights, (0.999, False)]  # one wrong answer above every right one
    xs, ys = fit_isotonic(capped)
    assert max(ys) < 0.9
    assert sure_share(capped, xs, ys) == 0.0
