"""The built-in recogniser: task options enforced while decoding (spec §6)."""

from __future__ import annotations

import io
import itertools
import struct
import zlib
from typing import Any

import numpy as np
import pytest
from PIL import Image

from capd.domain.tasks import ImageSpec
from capd.solving.ocr.base import UnreadableImage
from capd.solving.ocr.post import (
    MaskedDecoder,
    alphabet_for,
    ctc_best_path_chars,
    ctc_greedy,
    ctc_greedy_chars,
    evaluate_expression,
)
from tests.helpers import LiveServer, captcha_png, image_task


def test_reads_plain_text(engine: Any) -> None:
    reading = engine.read(captcha_png("aB3k9"), ImageSpec())
    assert reading.text == "aB3k9"
    assert 0.5 < reading.confidence <= 1.0


def test_numeric_1_answers_digits_only(engine: Any) -> None:
    assert engine.read(captcha_png("48213"), ImageSpec(numeric=1)).text == "48213"
    mixed = engine.read(captcha_png("aB3k9"), ImageSpec(numeric=1)).text
    assert mixed and mixed.isdigit()


def test_numeric_2_answers_no_digits(engine: Any) -> None:
    text = engine.read(captcha_png("ab3k9"), ImageSpec(numeric=2)).text
    assert text and not any(c.isdigit() for c in text)


def test_case_false_answers_lower_case(engine: Any) -> None:
    assert engine.read(captcha_png("aB3K9"), ImageSpec(case_sensitive=False)).text == "ab3k9"


@pytest.mark.parametrize(("shown", "answer"), [("7+3=", "10"), ("12x4", "48"), ("25+17=", "42")])
def test_math_answers_the_result(engine: Any, shown: str, answer: str) -> None:
    assert engine.read(captcha_png(shown), ImageSpec(math=True)).text == answer


def test_length_bounds_are_kept(engine: Any) -> None:
    shown = captcha_png("aB3k9")
    for shortest, longest in ((6, 6), (7, 0), (1, 4), (3, 3)):
        text = engine.read(shown, ImageSpec(min_length=shortest, max_length=longest)).text
        assert shortest <= len(text) <= (longest or 99), (shortest, longest, text)
    # a bound the reading already meets changes nothing
    assert engine.read(shown, ImageSpec(min_length=5, max_length=5)).text == "aB3k9"


def test_math_on_text_that_is_no_expression_reads_nothing(engine: Any) -> None:
    reading = engine.read(captcha_png("48213"), ImageSpec(math=True))
    assert reading.text == "" and reading.confidence == 0.0


@pytest.mark.parametrize("data", [b"\x00" * 300, b"GIF89a" + b"\x00" * 200,
                                  b"\x89PNG\r\n\x1a\n" + b"\x00" * 200])
def test_bytes_that_are_no_image(engine: Any, data: bytes) -> None:
    with pytest.raises(UnreadableImage):
        engine.read(data, ImageSpec())


def test_image_claiming_huge_dimensions_is_refused(engine: Any) -> None:
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(
            ">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", 60000, 60000, 8, 0, 0, 0, 0)
    bomb = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(
        b"IDAT", zlib.compress(b"\x00" * 1000)) + chunk(b"IEND", b"")
    with pytest.raises(UnreadableImage):
        engine.read(bomb, ImageSpec())


def test_transparent_and_grey_images_are_read(engine: Any) -> None:
    rgba = Image.open(io.BytesIO(captcha_png("pq82"))).convert("L").convert("RGBA")
    out = io.BytesIO()
    rgba.save(out, "PNG")
    assert engine.read(out.getvalue(), ImageSpec()).text == "pq82"


def test_alphabets() -> None:
    assert alphabet_for(ImageSpec(numeric=1)) == "0123456789"
    assert not set(alphabet_for(ImageSpec(numeric=2))) & set("0123456789")
    assert alphabet_for(ImageSpec(case_sensitive=False)).lower() == alphabet_for(
        ImageSpec(case_sensitive=False))


def test_ctc_greedy_collapses_repeats_and_blanks() -> None:
    symbols = ["", "a", "b"]
    frames = np.array([[0.1, 0.9, 0.0], [0.2, 0.8, 0.0], [0.9, 0.1, 0.0], [0.0, 0.3, 0.7],
                       [0.0, 0.6, 0.4]])
    text, confidence = ctc_greedy(frames, symbols)
    assert text == "aba"
    assert confidence == pytest.approx(0.9 * 0.7 * 0.6)
    assert ctc_greedy(np.array([[1.0, 0.0, 0.0]]), symbols) == ("", 0.0)


def _path_text(path: tuple[int, ...], symbols: str) -> str:
    return ctc_greedy_chars(np.eye(len(symbols))[list(path)], ["", *symbols[1:]])[0]


def test_best_path_of_a_length_is_the_most_probable_one() -> None:
    # against every path of a few frames: the most probable path whose text has an
    # allowed length (doubled letters need a blank between, as in CTC)
    rng = np.random.default_rng(7)
    symbols = "_ab"
    for _ in range(200):
        frames, classes = int(rng.integers(1, 7)), 3
        probs = rng.random((frames, classes)) ** 3
        probs /= probs.sum(axis=1, keepdims=True)
        shortest, longest = sorted(int(x) for x in rng.integers(0, frames + 2, 2))
        best: tuple[float, str] | None = None
        for path in itertools.product(range(classes), repeat=frames):
            text = _path_text(path, symbols)
            p = float(np.prod([probs[t, c] for t, c in enumerate(path)]))
            if shortest <= len(text) <= longest and (best is None or p > best[0]):
                best = (p, text)
        text, chars = ctc_best_path_chars(probs, ["", "a", "b"], shortest, longest)
        assert text == (best[1] if best else ""), (probs, shortest, longest)
        assert len(chars) == len(text)


def test_best_path_unbounded_is_the_greedy_one() -> None:
    rng = np.random.default_rng(8)
    symbols = ["", *"abcdef"]
    for _ in range(50):
        probs = rng.random((30, 7)) ** 4
        probs /= probs.sum(axis=1, keepdims=True)
        assert ctc_best_path_chars(probs, symbols, 0, 30) == ctc_greedy_chars(probs, symbols)


def test_decoder_searches_only_when_the_greedy_length_is_not_allowed() -> None:
    # greedy reads "ab"; three characters need three frames of alternating letters
    frames = np.log(np.array([[0.1, 0.8, 0.1], [0.6, 0.1, 0.3], [0.1, 0.1, 0.8]]))
    decoder = MaskedDecoder(["", "a", "b"])
    assert decoder.decode_chars(frames, ImageSpec())[0] == "ab"
    assert decoder.decode_chars(frames, ImageSpec(min_length=2, max_length=2))[0] == "ab"
    text, chars = decoder.decode_chars(frames, ImageSpec(min_length=3))
    assert text == "aba" and chars == pytest.approx((0.8, 0.3, 0.1))
    assert decoder.decode_chars(frames, ImageSpec(max_length=1))[0] in ("a", "b")
    assert decoder.decode_chars(frames, ImageSpec(min_length=4)) == ("", ())  # 3 frames
    # bounds below 0 (a lease may carry anything) bound nothing
    assert decoder.decode_chars(frames, ImageSpec(min_length=-3, max_length=-1))[0] == "ab"
    # an alphabet the model has no column for reads nothing, bounded or not
    assert decoder.decode_chars(frames, ImageSpec(numeric=1, min_length=2)) == ("", ())
    # arithmetic answers are not the text read: no bound applies
    assert decoder.decode_chars(frames, ImageSpec(math=True, min_length=3))[0] == ""


@pytest.mark.parametrize(("text", "value"), [
    ("7+3=", "10"), ("12-5=", "7"), ("4x6=", "24"), ("4*6", "24"), ("8÷2=", "4"),
    ("3-9=", "-6"), ("7÷2=", None), ("5/0", None), ("7+", None), ("abc", None), ("", None),
])
def test_evaluate_expression(text: str, value: str | None) -> None:
    assert evaluate_expression(text) == value


# -- through the API -------------------------------------------------------------------------
def solve(server: LiveServer, key: str, task: dict[str, Any]) -> dict[str, Any]:
    answer = server.call("createTask", {"clientKey": key, "task": task})
    return server.wait_result(key, answer["taskId"])


def test_api_math_module_and_flag(server: LiveServer, key: str) -> None:
    assert solve(server, key, image_task("7+3=", math=True))["solution"]["text"] == "10"
    via_module = solve(server, key, image_task("12x4", capMonsterModule="captcha_math"))
    assert via_module["solution"]["text"] == "48"
    via_key = server.call("createTask", {"clientKey": f"{key}__captcha_math",
                                         "task": image_task("6+2=")})
    assert server.wait_result(key, via_key["taskId"])["solution"]["text"] == "8"


def test_api_numeric_and_case(server: LiveServer, key: str) -> None:
    assert solve(server, key, image_task("48213", numeric=1))["solution"]["text"] == "48213"
    assert solve(server, key, image_task("aB3K9", case=False))["solution"]["text"] == "ab3k9"


def test_api_answer_lengths(server: LiveServer, key: str) -> None:
    six = solve(server, key, image_task("aB3k9", minLength=6, maxLength=6))
    assert len(six["solution"]["text"]) == 6
    # hints that are not integers of 1-20, or that contradict each other, are ignored
    for hints in ({"minLength": "6"}, {"minLength": 0, "maxLength": 0}, {"maxLength": 21},
                  {"minLength": True}, {"minLength": 7, "maxLength": 6}):
        assert solve(server, key, image_task("aB3k9", **hints))["solution"]["text"] == "aB3k9"


def test_api_unknown_module_falls_back_to_universal(server: LiveServer, key: str) -> None:
    result = solve(server, key, image_task("aB3k9", capMonsterModule="no_such_module"))
    assert result["solution"]["text"] == "aB3k9"
