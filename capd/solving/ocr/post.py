"""Post-processing shared by engines: alphabets per task options, CTC decoding, arithmetic."""

from __future__ import annotations

import re
import string
from collections.abc import Sequence

import numpy as np

from capd.domain.tasks import ImageSpec

DIGITS = string.digits
LETTERS = string.ascii_letters
MATH_SYMBOLS = "+-*x×÷/="

_EXPR_RE = re.compile(r"^(\d{1,6})([+\-*x×÷/])(\d{1,6})=?\??$")


def alphabet_for(spec: ImageSpec) -> str:
    """The characters a decoder may emit for a task (spec §6: enforce while decoding)."""
    if spec.math:
        return DIGITS + MATH_SYMBOLS
    if spec.numeric == 1:
        return DIGITS
    if spec.numeric == 2:
        return LETTERS if spec.case_sensitive else string.ascii_lowercase
    return LETTERS + DIGITS if spec.case_sensitive else string.ascii_lowercase + DIGITS


def ctc_greedy(probs: np.ndarray, symbols: Sequence[str], blank: int = 0) -> tuple[str, float]:
    """Greedy CTC decode of per-frame probabilities (frames x classes).

    Returns the text and its confidence: the product over emitted characters of the best
    per-frame probability within that character's run of frames.
    """
    best = probs.argmax(axis=1)
    peak = probs.max(axis=1)
    chars: list[str] = []
    confidence = 1.0
    prev = blank
    run_peak = 0.0
    for idx, p in zip(best.tolist(), peak.tolist(), strict=True):
        if idx != prev:
            if prev != blank:
                confidence *= run_peak
            run_peak = 0.0
            if idx != blank:
                chars.append(symbols[idx])
        if idx != blank:
            run_peak = max(run_peak, p)
        prev = idx
    if prev != blank:
        confidence *= run_peak
    if not chars:
        return "", 0.0
    return "".join(chars), confidence


def evaluate_expression(text: str) -> str | None:
    """The result of a read arithmetic expression such as ``7+3=``; None if not one."""
    m = _EXPR_RE.match(text.replace(" ", ""))
    if not m:
        return None
    a, op, b = int(m.group(1)), m.group(2), int(m.group(3))
    if op == "+":
        return str(a + b)
    if op == "-":
        return str(a - b)
    if op in "*x×":
        return str(a * b)
    if b == 0 or a % b:
        return None
    return str(a // b)
