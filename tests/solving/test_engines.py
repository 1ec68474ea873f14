"""Regression test of the shipped recogniser engines (issue 14): every engine on a small,
fixed sample of the real captchas' held-out split, the task options (numeric, case,
math), calibrated confidences and the threshold, and the combined engine's decisions.

The real captchas live outside the repository (training/datasets.py: a ``shared/datasets``
folder beside the checkout, or $CAPD_DATASETS); the accuracy floors skip when they are
absent. Floors are the
accuracy measured on this sample with the shipped models (2026-11-27), minus a margin.
"""

from __future__ import annotations

import contextlib
import io
import os
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest
from PIL import Image

from capd.domain.tasks import ImageSpec
from capd.errors import ConfigError
from capd.solving.ocr import ENGINES, load_recogniser
from capd.solving.ocr.base import Reading, Recogniser
from capd.solving.ocr.combined import CombinedEngine, Policy, cascade, decide
from capd.solving.ocr.ddddocr_engine import DdddOcrEngine
from capd.solving.ocr.post import recase
from tests.helpers import LiveServer, captcha_png, image_task
from training import datasets

PER_SCHEME = 8
DIGIT_SCHEMES = ("web_digits_binary", "web_digits_dotted_dark")
SHIPPED = ("ddddocr", "ddddocr-beta", "capd", "capd-web", "rapidocr", "auto")
# exact match, case-insensitive, over PER_SCHEME x 7 = 56 images; measured 2026-11-27:
# ddddocr 38, ddddocr-beta 38, capd 34, rapidocr 42, auto 45 right (auto with the second
# fine-tuned model as its first member); 2026-11-28: capd-web 43; floors ~3 images lower
FLOORS = {"ddddocr": 0.62, "ddddocr-beta": 0.62, "capd": 0.55, "capd-web": 0.71,
          "rapidocr": 0.69, "auto": 0.75}


@pytest.fixture(scope="module")
def engines() -> dict[str, Recogniser]:
    out = {}
    for name in SHIPPED:
        with contextlib.suppress(ConfigError):  # rapidocr not installed: its tests skip
            out[name] = load_recogniser(name)
    return out


def get(engines: dict[str, Recogniser], name: str) -> Recogniser:
    if name not in engines:
        pytest.skip(f"engine {name} is not installed")
    return engines[name]


def present_schemes() -> list[str]:
    root = datasets.datasets_root()
    return [s for s in datasets.SCHEMES if os.path.isfile(os.path.join(root, s, "labels.csv"))]


@pytest.fixture(scope="module")
def real_sample() -> list[tuple[str, bytes, str]]:
    schemes = present_schemes()
    if len(schemes) < len(datasets.SCHEMES):
        pytest.skip(f"the labelled real captchas are not at {datasets.datasets_root()}")
    out = []
    for scheme in schemes:
        for path, label in datasets.split(scheme)[1][:PER_SCHEME]:
            with open(path, "rb") as f:
                out.append((scheme, f.read(), label.lower()))
    return out


# -- accuracy floors on real held-out captchas -----------------------------------------------
@pytest.fixture(scope="module")
def real_readings(engines: dict[str, Recogniser], real_sample: list
                  ) -> Callable[[str], list[tuple[Reading, str]]]:
    """name -> (reading, label) of every sample image by that engine, read once."""
    done: dict[str, list[tuple[Reading, str]]] = {}

    def readings(name: str) -> list[tuple[Reading, str]]:
        if name not in done:
            engine = get(engines, name)
            done[name] = [
                (engine.read(image, ImageSpec(numeric=1) if scheme in DIGIT_SCHEMES
                             else ImageSpec(case_sensitive=False)), label)
                for scheme, image, label in real_sample]
        return done[name]

    return readings


@pytest.mark.parametrize("name", SHIPPED)
def test_accuracy_floor_on_real_held_out_captchas(real_readings: Callable, name: str) -> None:
    readings = real_readings(name)
    right = sum(r.text == label for r, label in readings)
    assert right / len(readings) >= FLOORS[name], (name, right, len(readings))


@pytest.mark.parametrize("name", SHIPPED)
def test_threshold_70_keeps_answers_that_are_right(real_readings: Callable, name: str) -> None:
    """recognizingThreshold 70 on the calibrated confidence lets some answers through, and
    most of them are right (the calibration promises about 70% or more; measured on this
    sample: 27/29 for ddddocr, 33/35 for ddddocr-beta, every one of 28-36 for capd,
    capd-web, rapidocr and auto)."""
    kept = [r.text == label for r, label in real_readings(name) if r.confidence >= 0.70]
    assert len(kept) >= 20 and sum(kept) / len(kept) >= 0.85, (name, sum(kept), len(kept))


def test_held_out_split_is_fixed_and_disjoint() -> None:
    schemes = present_schemes()
    if not schemes:
        pytest.skip("no labelled real captchas")
    train, held = datasets.split(schemes[0])
    assert not {p for p, _ in train} & {p for p, _ in held}
    assert len(train) == (len(train) + len(held)) * 4 // 5
    assert datasets.split(schemes[0])[1] == held
    assert set(datasets.finetune_split(schemes[0])[1]) <= set(train)


# -- every engine: registration and task options --------------------------------------------
def test_engines_are_selectable_by_name(engines: dict[str, Recogniser]) -> None:
    assert set(SHIPPED) <= set(ENGINES)
    for name, engine in engines.items():
        assert engine.name == name


def test_unknown_engine_is_a_config_error() -> None:
    with pytest.raises(ConfigError):
        load_recogniser("no-such-engine")


# capd-web, fine-tuned on real websites' captchas, lost some of the synthetic styles: in
# Pillow's default font it reads the 1 of "48213" as 7 and a W as "vv" (its case is right
# otherwise). (auto answered "KX7pW" for "Kx7pW" with the policy fitted before the
# character vote stopped overruling surer readings; the refitted one reads it.) Strict:
# the marks fail the suite once a retrained model reads them.
MISREADS = {("numeric_1", "capd-web"), ("case", "Kx7pW", "capd-web"),
            ("case", "WkPz4", "capd-web")}


def known_misread(request: pytest.FixtureRequest, *key: str) -> None:
    if key in MISREADS:
        request.applymarker(pytest.mark.xfail(
            strict=True, reason=f"{key[-1]} misreads this glyph in Pillow's default font"))


@pytest.mark.parametrize("name", SHIPPED)
def test_numeric_1_answers_digits_only(engines: dict[str, Recogniser], name: str,
                                      request: pytest.FixtureRequest) -> None:
    known_misread(request, "numeric_1", name)
    engine = get(engines, name)
    assert engine.read(captcha_png("48213"), ImageSpec(numeric=1)).text == "48213"
    mixed = engine.read(captcha_png("aB3k9"), ImageSpec(numeric=1)).text
    assert mixed and mixed.isdigit()


@pytest.mark.parametrize("name", SHIPPED)
def test_numeric_2_answers_no_digits(engines: dict[str, Recogniser], name: str) -> None:
    text = get(engines, name).read(captcha_png("ab3k9"), ImageSpec(numeric=2)).text
    assert text and not any(c.isdigit() for c in text)


@pytest.mark.parametrize("name", SHIPPED)
def test_case_false_answers_lower_case(engines: dict[str, Recogniser], name: str) -> None:
    text = get(engines, name).read(captcha_png("aB3K9"), ImageSpec(case_sensitive=False)).text
    assert text == "ab3k9"


@pytest.mark.parametrize("name", SHIPPED)
@pytest.mark.parametrize("shown", ["k7Pm3", "Kx7pW", "WkPz4"])
def test_case_true_answers_in_the_image_case(engines: dict[str, Recogniser], name: str,
                                             shown: str, request: pytest.FixtureRequest
                                             ) -> None:
    known_misread(request, "case", shown, name)
    assert get(engines, name).read(captcha_png(shown, size=36), ImageSpec()).text == shown


@pytest.mark.parametrize("name", SHIPPED)
def test_math_answers_the_result(engines: dict[str, Recogniser], name: str) -> None:
    assert get(engines, name).read(captcha_png("7+3="), ImageSpec(math=True)).text == "10"


@pytest.mark.parametrize("name", SHIPPED)
def test_confidence_is_a_probability_with_per_character_parts(
        engines: dict[str, Recogniser], name: str) -> None:
    reading = get(engines, name).read(captcha_png("aB3k9"), ImageSpec())
    assert 0.0 < reading.confidence <= 1.0
    if name != "auto":
        assert len(reading.chars) == len(reading.text)
        assert all(0.0 < p <= 1.0 for p in reading.chars)


@pytest.mark.parametrize("name", SHIPPED)
def test_noise_reads_below_a_threshold_of_90(engines: dict[str, Recogniser], name: str) -> None:
    noise = np.random.default_rng(1).integers(0, 256, (50, 160, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(noise).save(buf, "PNG")
    assert get(engines, name).read(buf.getvalue(), ImageSpec()).confidence < 0.9


def test_ddddocr_own_case_is_what_issue_14_saw() -> None:
    """The default model alone reads a same-shape capital as small; the engine borrows the
    case of its letters from capd's CRNN."""
    image = captcha_png("Kx7pW", size=36)
    assert DdddOcrEngine(restore_case=False).read(image, ImageSpec()).text == "Kx7pw"
    assert DdddOcrEngine().read(image, ImageSpec()).text == "Kx7pW"


def test_recase_takes_the_case_of_aligned_letters() -> None:
    assert recase("kx7pw", "KX7PW") == "KX7PW"
    assert recase("kx7pw", "KY7PW") == "Kx7PW"  # x is not aligned with Y: kept
    assert recase("kx7pw", "KX7P") == "KX7Pw"   # aligned although one is shorter
    assert recase("abcd", "xAbCd") == "AbCd"    # aligned although shifted
    assert recase("ab3k9", "") == "ab3k9"


# -- the combined engine ---------------------------------------------------------------------
class Fixed:
    """A member that always answers the same and counts its reads."""

    def __init__(self, name: str, text: str, confidence: float) -> None:
        self.name = name
        self.reading = Reading(text, confidence, tuple(confidence for _ in text))
        self.reads = 0

    def read(self, image: bytes, spec: ImageSpec) -> Reading:
        self.reads += 1
        return self.reading


def combined_of(*members: Fixed, stop_at: float = 0.9,
                case_aware: tuple[str, ...] = ()) -> CombinedEngine:
    policy = Policy(tuple(m.name for m in members), stop_at, case_aware)
    return CombinedEngine(policy, {m.name: m for m in members})


def test_combined_stops_at_a_confident_first_member() -> None:
    cheap, dear = Fixed("a", "abcd", 0.95), Fixed("b", "wxyz", 0.99)
    reading = combined_of(cheap, dear).read(b"", ImageSpec())
    assert reading.text == "abcd" and dear.reads == 0


def test_first_member_alone_needs_its_own_stop() -> None:
    a, b = Fixed("a", "abcd", 0.95), Fixed("b", "abcd", 0.5)
    policy = Policy(("a", "b"), 0.9, (), None, 1.0, first_stop_at=0.98)
    reading = CombinedEngine(policy, {"a": a, "b": b}).read(b"", ImageSpec())
    assert reading.text == "abcd" and b.reads == 1  # 0.95 < 0.98: b was asked too
    low = Policy(("a", "b"), 0.99, (), None, 1.0, first_stop_at=0.9)
    b.reads = 0
    CombinedEngine(low, {"a": a, "b": b}).read(b"", ImageSpec())
    assert b.reads == 0  # 0.95 >= 0.9 ends it, though stop_at is 0.99


def test_policy_round_trips_through_json() -> None:
    policy = Policy(("a", "b"), 0.6, ("a",), None, 0.3, first_stop_at=0.95)
    assert Policy.from_json(policy.to_json()) == policy
    plain = Policy(("a",), 0.6)
    assert "first_stop_at" not in plain.to_json()
    assert Policy.from_json(plain.to_json()).first_stop_at is None


def test_combined_runs_the_others_when_unsure_and_agreement_wins() -> None:
    a, b, c = Fixed("a", "abcd", 0.5), Fixed("b", "wxyz", 0.6), Fixed("c", "abcd", 0.4)
    reading = combined_of(a, b, c).read(b"", ImageSpec())
    assert reading.text == "abcd" and b.reads == c.reads == 1


def test_combined_stops_once_two_members_agree_enough() -> None:
    a, b, c = Fixed("a", "abcd", 0.7), Fixed("b", "abcd", 0.8), Fixed("c", "wxyz", 0.9)
    assert combined_of(a, b, c).read(b"", ImageSpec()).text == "abcd"
    assert c.reads == 0  # 1 - 0.3 * 0.2 = 0.94 >= 0.9


def test_combined_spells_case_as_its_case_aware_member() -> None:
    a, b = Fixed("a", "kx7pw", 0.6), Fixed("b", "Kx7pW", 0.3)
    engine = combined_of(a, b, case_aware=("b",))
    assert engine.read(b"", ImageSpec()).text == "Kx7pW"
    assert engine.read(b"", ImageSpec(case_sensitive=False)).text == "kx7pw"


def test_combined_with_nothing_read_is_empty() -> None:
    reading = combined_of(Fixed("a", "", 0.0), Fixed("b", "", 0.0)).read(b"", ImageSpec())
    assert reading == Reading("", 0.0)


def test_combined_skips_members_that_are_not_installed() -> None:
    a = Fixed("a", "abcd", 0.5)
    engine = CombinedEngine(Policy(("a", "finetuned-not-here")), {"a": a})
    assert engine.policy.members == ("a",)
    assert engine.read(b"", ImageSpec()).text == "abcd"


def test_decide_scores_agreement_against_the_runner_up() -> None:
    readings = [("a", Reading("abcd", 0.5)), ("b", Reading("abcd", 0.5)),
                ("c", Reading("wxyz", 0.6))]
    text, score, winner = decide(readings, ImageSpec())
    assert (text, winner) == ("abcd", "a")
    assert score == pytest.approx((1 - 0.25) * (1 - 0.6))


def test_characters_are_voted_when_no_two_members_agree() -> None:
    readings = [("a", Reading("ab3d", 0.5, (0.9, 0.9, 0.9, 0.2))),
                ("b", Reading("xb3d", 0.4, (0.3, 0.9, 0.9, 0.9))),
                ("c", Reading("ab8dd", 0.3, (0.9,) * 5))]
    text, score, _ = decide(readings, ImageSpec())
    assert text == "ab3d"  # position 0: a (0.45) beats x (0.12); the 5-letter reading abstains
    assert 0.0 < score < 1 - 0.5 * 0.6


def test_unsure_readings_of_one_length_do_not_outvote_a_sure_one() -> None:
    # the sure reading has another length, so it cannot vote; the two unsure ones can
    readings = [("a", Reading("abcdefg", 0.33, (0.9,) * 7)),
                ("b", Reading("xbcdefgh", 0.02, (0.5,) * 8)),
                ("c", Reading("ybcdefgh", 0.01, (0.5,) * 8))]
    text, score, winner = decide(readings, ImageSpec())
    assert (text, winner) == ("abcdefg", "a")
    assert score == pytest.approx(0.33 * (1 - 0.02))


def test_finetuned_reports_per_character_parts() -> None:
    from capd.solving.ocr.finetuned_engine import FinetunedEngine

    image = captcha_png("aB3k9")
    reading = FinetunedEngine().read(image, ImageSpec())
    assert len(reading.chars) == len(reading.text) > 0
    raw = FinetunedEngine(calibrate=False).read(image, ImageSpec())
    assert raw.text == reading.text
    assert raw.confidence == pytest.approx(float(np.prod(raw.chars)))


def test_agreement_can_count_for_more_than_independence() -> None:
    readings = [("a", Reading("abcd", 0.4)), ("b", Reading("abcd", 0.4)),
                ("c", Reading("wxyz", 0.8))]
    assert decide(readings, ImageSpec())[0] == "wxyz"  # 1 - 0.6 * 0.6 = 0.64 < 0.8
    text, score, _ = decide(readings, ImageSpec(), agreement=0.3)  # 1 - 0.36 * 0.3 > 0.8
    assert text == "abcd" and score == pytest.approx((1 - 0.36) * (1 - 0.8))


def test_cascade_reads_members_in_order() -> None:
    seen: list[str] = []

    def read(name: str) -> Reading:
        seen.append(name)
        return Reading("abcd", 0.1)

    cascade(Policy(("x", "y", "z"), 0.99), ImageSpec(), read)
    assert seen == ["x", "y", "z"]


# -- through the API -------------------------------------------------------------------------
def solve(server: LiveServer, key: str, task: dict[str, Any]) -> dict[str, Any]:
    answer = server.call("createTask", {"clientKey": key, "task": task})
    return server.wait_result(key, answer["taskId"])


@pytest.mark.parametrize("shown", ["k7Pm3", "Kx7pW"])
def test_api_case_true_answers_in_the_image_case(server: LiveServer, key: str,
                                                 shown: str) -> None:
    assert solve(server, key, image_task(shown, case=True))["solution"]["text"] == shown


def test_api_combined_engine_answers_case_numeric_math(
        make_server: Callable[..., LiveServer], engines: dict[str, Recogniser]) -> None:
    server = make_server(recogniser=get(engines, "auto"))
    key = server.new_account("10")
    assert solve(server, key, image_task("WkPz4", case=True))["solution"]["text"] == "WkPz4"
    assert solve(server, key, image_task("48213", numeric=1))["solution"]["text"] == "48213"
    assert solve(server, key, image_task("7+3=", math=True))["solution"]["text"] == "10"
