"""A module's vote: an unsure first reading is read again at several widths and the
answer most of them give wins (post.decode_by_vote); the manifest's ``vote`` turns it on,
it supersedes the second look, and a malformed one is refused on load."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest

from capd.domain.tasks import ImageSpec
from capd.modules.engine import ModuleEngine
from capd.modules.library import ModuleError, unpack
from capd.solving.ocr.post import decode_by_vote
from tests.helpers import captcha_png, record_stretches
from tests.modules.conftest import repacked


class _Decoder:
    """Decodes the 'frames' of a width factor to the reading given for that factor."""

    def __init__(self, readings: dict[float, tuple[str, tuple[float, ...]]]) -> None:
        self.readings = readings

    def decode_chars(self, frames: Any, spec: ImageSpec) -> tuple[str, tuple[float, ...]]:
        return self.readings[frames]


def _vote(readings: dict[float, tuple[str, tuple[float, ...]]], below: float
          ) -> tuple[tuple[str, tuple[float, ...]], list[float]]:
    """decode_by_vote over these readings (1.0 first, then the others' factors in order)
    and the width factors it read at."""
    asked: list[float] = []

    def frames_at(stretch: float) -> float:
        asked.append(stretch)
        return stretch

    stretches = [s for s in readings if s != 1.0]
    return decode_by_vote(_Decoder(readings), frames_at, ImageSpec(), below,  # type: ignore[arg-type]
                          stretches), asked


def test_a_sure_first_reading_is_not_read_again() -> None:
    (text, chars), asked = _vote({1.0: ("ab", (0.99, 0.98)), 0.9: ("xy", (1.0, 1.0))},
                                 below=0.95)
    assert (text, chars, asked) == ("ab", (0.99, 0.98), [1.0])


def test_the_answer_most_widths_give_wins_over_a_surer_single_one() -> None:
    readings = {1.0: ("a1", (0.9, 0.6)), 0.9: ("al", (0.99, 0.99)),
                1.1: ("a1", (0.9, 0.8)), 1.25: ("a1", (0.7, 0.7))}
    (text, chars), asked = _vote(readings, below=0.95)
    assert asked == [1.0, 0.9, 1.1, 1.25]
    assert text == "a1"
    # its surest reading's probabilities, their product scaled by the 3 of 4 that agree
    assert float(np.prod(chars)) == pytest.approx(0.9 * 0.8 * 3 / 4)


def test_between_equally_many_the_surer_answer_wins() -> None:
    readings = {1.0: ("ab", (0.5,)), 0.9: ("cd", (0.6,)), 1.1: ("ab", (0.4,)),
                1.25: ("cd", (0.3,))}
    (text, chars), _ = _vote(readings, below=0.95)
    assert text == "cd"
    assert chars == pytest.approx((0.6 * 0.5,))


def test_empty_readings_do_not_vote() -> None:
    (text, _), _ = _vote({1.0: ("", ()), 0.9: ("", ()), 1.1: ("7", (0.4,))}, below=0.95)
    assert text == "7"
    (text, chars), _ = _vote({1.0: ("", ()), 0.9: ("", ())}, below=0.95)
    assert (text, chars) == ("", ())


@pytest.mark.parametrize(("below", "expected"), [
    (1.0, [1.0, 0.8, 1.25]),  # every reading is unsure: the vote reads both widths too
    (0.0, [1.0]),             # none is
])
def test_the_engine_votes_when_the_manifest_says_so(module_file: bytes, below: float,
                                                    expected: list[float],
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    module = unpack(module_file)
    manifest = {**module.manifest, "vote": {"below": below, "stretches": [0.8, 1.25]},
                # the vote supersedes a second look, which would read at 1.5 instead
                "second_look": {"below": 1.0, "stretch": 1.5}}
    engine = ModuleEngine(dataclasses.replace(module, manifest=manifest))
    calls = record_stretches(monkeypatch, engine, "frames")
    engine.read(captcha_png("4821"), ImageSpec(numeric=1))
    assert calls == expected


@pytest.mark.parametrize("vote", [
    [], {"below": 0.5}, {"stretches": [0.9]}, {"below": "0.5", "stretches": [0.9]},
    {"below": 1.5, "stretches": [0.9]}, {"below": 0.5, "stretches": []},
    {"below": 0.5, "stretches": [0.4]}, {"below": 0.5, "stretches": [3.5]},
    {"below": 0.5, "stretches": ["0.9"]}, {"below": 0.5, "stretches": [True]},
    {"below": 0.5, "stretches": [1.1] * 9}, {"below": True, "stretches": [0.9]},
])
def test_a_malformed_vote_is_refused(vote: Any) -> None:
    with pytest.raises(ModuleError, match="vote is malformed"):
        unpack(repacked({"vote": vote}))


def test_a_well_formed_vote_loads() -> None:
    vote = {"below": 0.95, "stretches": [0.8, 0.9, 1.1, 1.25, 1.4]}
    assert unpack(repacked({"vote": vote})).manifest["vote"] == vote
