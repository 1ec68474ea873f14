"""Post-processing shared by engines: alphabets per task options, CTC decoding, arithmetic."""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Callable, Sequence
from difflib import SequenceMatcher

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


def length_bounds(spec: ImageSpec) -> tuple[int, int]:
    """The answer lengths a task allows, (shortest, longest): its minLength and
    maxLength (0: no bound). Arithmetic tasks are not bounded: their answer is not the
    text read."""
    if spec.math:
        return 0, 10**6
    # a worker takes these from its lease as they come: nothing below 0 means a bound
    return max(0, spec.min_length), spec.max_length if spec.max_length > 0 else 10**6


def ctc_greedy(probs: np.ndarray, symbols: Sequence[str], blank: int = 0) -> tuple[str, float]:
    """Greedy CTC decode of per-frame probabilities (frames x classes).

    Returns the text and its confidence: the product over emitted characters of the best
    per-frame probability within that character's run of frames.
    """
    text, chars = ctc_greedy_chars(probs, symbols, blank)
    if not text:
        return "", 0.0
    return text, float(np.prod(chars))


def ctc_greedy_chars(probs: np.ndarray, symbols: Sequence[str], blank: int = 0
                     ) -> tuple[str, tuple[float, ...]]:
    """Greedy CTC decode: the text and, per emitted character, the best per-frame
    probability within that character's run of frames (one number per character)."""
    read, peaks = ctc_runs(probs.argmax(axis=1).tolist(), probs.max(axis=1).tolist(), blank)
    return "".join(symbols[i] for i in read), tuple(peaks)


def ctc_runs(path: Sequence[int], peak: Sequence[float], blank: int = 0
             ) -> tuple[list[int], list[float]]:
    """A CTC path (a class per frame, and that class's probability there) -> the class of
    each character it emits (blanks dropped, repeats merged) and each character's best
    probability within its run of frames."""
    read: list[int] = []
    peaks: list[float] = []
    prev = blank
    run_peak = 0.0
    for idx, p in zip(path, peak, strict=True):
        if idx != prev:
            if prev != blank:
                peaks.append(run_peak)
            run_peak = 0.0
            if idx != blank:
                read.append(idx)
        if idx != blank:
            run_peak = max(run_peak, p)
        prev = idx
    if prev != blank:
        peaks.append(run_peak)
    return read, peaks


def ctc_best_path_chars(probs: np.ndarray, symbols: Sequence[str], shortest: int,
                        longest: int, blank: int = 0) -> tuple[str, tuple[float, ...]]:
    """The most probable CTC path (one class per frame) whose text has ``shortest`` to
    ``longest`` characters, as ctc_greedy_chars reports it; ("", ()) when no path of
    these frames can have such a length. Unbounded, it is the greedy path.

    Viterbi over states (characters emitted so far, class of the previous frame): a
    blank keeps the count, the previous frame's class again continues its character, any
    other class starts a new one (so a doubled character needs a blank between)."""
    frames, classes = probs.shape
    most = min(longest, frames)
    if shortest > most or classes < 2:  # (only the blank: no text at all)
        return "", ()
    logp = np.log(np.maximum(probs, 1e-30))
    counts, cls = np.arange(most + 1), np.arange(classes)
    score = np.full((most + 1, classes), -np.inf)
    score[0, blank] = 0.0
    from_k = np.empty((frames, most + 1, classes), dtype=np.int32)
    from_c = np.empty((frames, most + 1, classes), dtype=np.int32)
    for t in range(frames):
        top2 = np.argsort(-score, axis=1)[:, :2]
        v1, v2 = score[counts, top2[:, 0]], score[counts, top2[:, 1]]
        # a new character s after count k-1: from that count's best state whose class is
        # not s (a state of class s would continue it instead)
        is_top = cls[None, :] == top2[:-1, :1]
        start = np.where(is_top, v2[:-1, None], v1[:-1, None])
        start_c = np.where(is_top, top2[:-1, 1:2], top2[:-1, :1])
        new = score.copy()
        take = start > score[1:]
        new[1:] = np.where(take, start, score[1:])
        from_k[t] = counts[:, None]
        from_k[t, 1:] = np.where(take, counts[:-1, None], counts[1:, None])
        from_c[t] = cls[None, :]
        from_c[t, 1:] = np.where(take, start_c, cls[None, :])
        # a blank: from the best state of the same count
        new[:, blank] = v1
        from_c[t, :, blank] = top2[:, 0]
        from_k[t, :, blank] = counts
        score = new + logp[t][None, :]
    ends = score[shortest:]
    k, c = divmod(int(ends.argmax()), classes)
    k += shortest
    if not np.isfinite(score[k, c]):
        return "", ()
    path = [0] * frames
    for t in range(frames - 1, -1, -1):
        path[t] = c
        k, c = int(from_k[t, k, c]), int(from_c[t, k, c])
    read, peaks = ctc_runs(path, [float(probs[t, i]) for t, i in enumerate(path)], blank)
    return "".join(symbols[i] for i in read), tuple(peaks)


def recase(text: str, reference: str) -> str:
    """``text`` with the case of ``reference`` for every letter the two read alike: the
    strings are aligned case-insensitively (longest matching blocks), and each letter in
    a matching block takes the reference's case; other characters are kept."""
    out = list(text)
    matcher = SequenceMatcher(None, text.lower(), reference.lower(), autojunk=False)
    for block in matcher.get_matching_blocks():
        for k in range(block.size):
            out[block.a + k] = reference[block.b + k]
    return "".join(out)


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


class MaskedDecoder:
    """Greedy CTC over a model's output restricted to the task's alphabet (spec §6: numeric
    and case are enforced while decoding, not by deleting characters afterwards).

    ``charset[i]`` is the symbol of output column ``i``; column 0 is the CTC blank.
    ``aliases`` maps an alphabet character to the model's spelling of it (``*`` → ``×``).
    """

    def __init__(self, charset: Sequence[str], aliases: dict[str, str] | None = None) -> None:
        self._index = {c: i for i, c in enumerate(charset) if c and i}
        self._aliases = aliases or {}
        self._columns: dict[tuple[str, bool], tuple[np.ndarray, list[str], np.ndarray | None]] = {}

    def _columns_for(self, alphabet: str, fold_case: bool
                     ) -> tuple[np.ndarray, list[str], np.ndarray | None]:
        """Columns to keep (blank first), the symbol each emits, and for case folding the
        position of each upper-case column's lower-case partner."""
        key = (alphabet, fold_case)
        cached = self._columns.get(key)
        if cached is not None:
            return cached
        wanted: list[str] = []
        emit: list[str] = []
        for c in dict.fromkeys(alphabet):
            col = self._aliases.get(c, c)
            if col in self._index and col not in wanted:
                wanted.append(col)
                emit.append(c)
        extra: list[str] = []
        if fold_case:
            extra = [c.upper() for c in wanted if c.isalpha() and c.upper() in self._index
                     and c.upper() != c]
        symbols = ["", *emit, *extra]
        cols = np.array([0] + [self._index[c] for c in wanted + extra], dtype=np.int64)
        partner = None
        if extra:
            partner = np.array([symbols.index(c.lower()) for c in extra], dtype=np.int64)
        result = (cols, symbols, partner)
        self._columns[key] = result
        return result

    def decode(self, frames: np.ndarray, spec: ImageSpec) -> tuple[str, float]:
        """Text and raw confidence from one image's (frames x classes) logits."""
        text, chars = self.decode_chars(frames, spec)
        return (text, float(np.prod(chars))) if text else ("", 0.0)

    def decode_chars(self, frames: np.ndarray, spec: ImageSpec
                     ) -> tuple[str, tuple[float, ...]]:
        """Text and per-character probabilities from one image's (frames x classes)
        logits (log-probabilities work too: only differences between columns count)."""
        fold = not spec.case_sensitive and not spec.math and spec.numeric != 1
        cols, symbols, partner = self._columns_for(alphabet_for(spec), fold)
        sub = frames[:, cols].astype(np.float64)
        sub = np.exp(sub - sub.max(axis=1, keepdims=True))
        sub /= sub.sum(axis=1, keepdims=True)
        if partner is not None:
            # case-folded decoding: an upper-case letter's probability counts for its
            # lower-case partner, which is the only spelling emitted
            n_extra = len(partner)
            sub[:, partner] += sub[:, -n_extra:]
            sub = sub[:, :-n_extra]
            symbols = symbols[:-n_extra]
        text, chars = ctc_greedy_chars(sub, symbols)
        shortest, longest = length_bounds(spec)
        if not shortest <= len(text) <= longest:
            # the greedy path is the most probable of all; only when its length is not
            # the task's is a less probable path of an allowed length searched for
            return ctc_best_path_chars(sub, symbols, shortest, longest)
        return text, chars


def decode_with_second_look(decoder: MaskedDecoder, frames_at: Callable[[float], np.ndarray],
                            spec: ImageSpec, below: float, stretch: float
                            ) -> tuple[str, tuple[float, ...]]:
    """The text and per-character probabilities of ``frames_at(1.0)`` (an image's frames
    read at a width factor); when their product is below ``below``, the image is read
    again ``stretch`` times wider and the more confident reading is kept (the second
    look of the finetuned engine and of custom modules)."""
    text, chars = decoder.decode_chars(frames_at(1.0), spec)
    raw = float(np.prod(chars)) if text else 0.0
    if raw < below:
        again, chars_again = decoder.decode_chars(frames_at(stretch), spec)
        if again and float(np.prod(chars_again)) > raw:
            return again, chars_again
    return text, chars


def decode_by_vote(decoder: MaskedDecoder, frames_at: Callable[[float], np.ndarray],
                   spec: ImageSpec, below: float, stretches: Sequence[float]
                   ) -> tuple[str, tuple[float, ...]]:
    """The text and per-character probabilities of ``frames_at(1.0)``; when their
    product is below ``below``, the image is read again at each width factor in
    ``stretches`` and the text most readings agree on wins (between equally many, the
    one read most confidently). Its probabilities are those of its most confident
    reading, scaled so that their product is multiplied by the share of readings that
    agree: an answer half the widths gave is less sure than one they all gave. Narrower
    and wider images put the frame boundaries elsewhere, so a character a strike-through
    line or a crowded neighbour hides at one width is often plain at another (custom
    modules' vote). One network's case of ``decode_by_members``."""
    return decode_by_members(decoder, lambda stretch: [frames_at(stretch)], spec, below,
                             stretches)


def sure_agreement(readings: Sequence[tuple[str, tuple[float, ...]]], below: float
                   ) -> tuple[str, tuple[float, ...]] | None:
    """The reading every one of ``readings`` (text, per-character probabilities) gives,
    with the least sure one's probabilities, when they all give the same text and each
    is at least ``below`` sure (the product of its probabilities); otherwise None."""
    sure = [float(np.prod(c)) if t else 0.0 for t, c in readings]
    if readings and len({t for t, _ in readings}) == 1 and min(sure) >= below:
        return readings[sure.index(min(sure))]
    return None


def decode_by_members(decoder: MaskedDecoder,
                      frames_at: Callable[[float], Sequence[np.ndarray]], spec: ImageSpec,
                      below: float, stretches: Sequence[float]
                      ) -> tuple[str, tuple[float, ...]]:
    """decode_by_vote over several networks (a module's members): ``frames_at`` gives
    each network's frames at a width. When every network reads the same text at width
    1.0 with a confidence of at least ``below``, that text wins, with the least sure
    network's probabilities; otherwise every network reads the image again at each of
    ``stretches``, and the text most of all these readings give wins as in
    decode_by_vote. Networks trained apart miss different characters."""
    first = [decoder.decode_chars(frames, spec) for frames in frames_at(1.0)]
    agreed = sure_agreement(first, below)
    if agreed is not None:
        return agreed
    readings = first + [decoder.decode_chars(frames, spec)
                        for s in stretches for frames in frames_at(s)]
    scored = [(t, c, float(np.prod(c))) for t, c in readings if t]
    if not scored:
        return first[0]
    counts = Counter(t for t, _, _ in scored)
    # the surest reading of the text most readings give (between equally many, the surer)
    winner, best, _ = max(scored, key=lambda r: (counts[r[0]], r[2]))
    share = (counts[winner] / len(readings)) ** (1.0 / len(best))
    return winner, tuple(float(p) * share for p in best)
