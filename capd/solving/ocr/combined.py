"""The combined engine ("auto"): several engines in turn (the cheapest or the most accurate
first, whichever the fitted policy chose), stopping as soon as the answer is sure enough.

The members and the stopping point are data (models/auto.json, fitted by
training/evaluate_real.py --calibrate on held-out captchas), so a new engine slots in by
adding its name there. Per task:

1. Members run in the listed order. After each one, the answers so far
   are grouped: readings that agree (case-insensitively when the task is case-sensitive,
   so that case variants vote together) pool their calibrated confidences.
2. The best group wins (ties: the earlier member): the one most likely to hold a right
   reading, where agreement may count for more than independent members would make it
   (``agreement``: two engines rarely misread a captcha into the same wrong text). Its
   score is the chance, members taken as independent, that some agreeing member is
   right and the strongest disagreeing answer is not:
   ``noisy_or(best) * (1 - noisy_or(next))`` (that score separates right from wrong
   answers better than an agreement-weighted one, which is what a threshold needs).
   When no two members agree at all, the readings of the most supported length vote
   character by character (vote_characters), and the vote's answer is taken when its
   score is the higher.
3. Once the score reaches ``stop_at`` the remaining members are skipped (after the first
   member alone: ``first_stop_at``, where the policy sets one; a member that is often
   sure and wrong needs a higher bar alone than once another member has a say).
4. The confidence returned is the score through the combined engine's own isotonic map
   (fitted like every engine's), so that recognizingThreshold keeps its meaning.

Case (case:true): some engines do not know case by themselves (ddddocr's models, which
borrow the case of their letters from capd's CRNN, ddddocr_engine.py); engines that do
are listed in ``case_aware``. The winning group's
spelling is that of its most confident case-aware member, if it has one.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from importlib import import_module, resources
from inspect import signature

from capd.domain.tasks import ImageSpec
from capd.errors import ConfigError
from capd.solving.ocr.base import Reading, Recogniser
from capd.solving.ocr.onnx_engine import Calibration

POLICY_FILE = "auto.json"
# members when models/auto.json is absent: every engine, cheapest first
DEFAULT_MEMBERS = ("capd", "ddddocr", "ddddocr-beta", "rapidocr", "finetuned")
DEFAULT_CASE_AWARE = ("capd", "capd-web", "rapidocr", "finetuned")
DEFAULT_STOP_AT = 0.95


@dataclass(frozen=True)
class Policy:
    """Which engines run, in what order, and when to stop."""

    members: tuple[str, ...]
    stop_at: float = DEFAULT_STOP_AT
    case_aware: tuple[str, ...] = DEFAULT_CASE_AWARE
    calibration: Calibration | None = field(default=None, compare=False)
    # each further member agreeing multiplies the chance that all of them are wrong by
    # this (1.0: independent members; below: agreement counts for more)
    agreement: float = 1.0
    # the stop after the first member alone (None: stop_at)
    first_stop_at: float | None = None

    def stop_after(self, members_read: int) -> float:
        """The score at which the cascade stops once this many members have read."""
        if members_read == 1 and self.first_stop_at is not None:
            return self.first_stop_at
        return self.stop_at

    def to_json(self) -> dict:
        out: dict = {"members": list(self.members), "stop_at": self.stop_at,
                     "agreement": self.agreement, "case_aware": list(self.case_aware)}
        if self.first_stop_at is not None:
            out["first_stop_at"] = self.first_stop_at
        if self.calibration is not None:
            out["raw"] = [round(float(x), 6) for x in self.calibration.xs]
            out["calibrated"] = [round(float(y), 6) for y in self.calibration.ys]
        return out

    @classmethod
    def from_json(cls, data: dict) -> Policy:
        cal = Calibration(data["raw"], data["calibrated"]) if "raw" in data else None
        first = data.get("first_stop_at")
        return cls(tuple(data["members"]), float(data["stop_at"]),
                   tuple(data.get("case_aware", DEFAULT_CASE_AWARE)), cal,
                   float(data.get("agreement", 1.0)),
                   None if first is None else float(first))


def load_policy() -> Policy:
    """The shipped policy (models/auto.json), else every engine with a default stop."""
    path = resources.files("capd.solving.ocr").joinpath("models", POLICY_FILE)
    if not path.is_file():
        return Policy(DEFAULT_MEMBERS)
    return Policy.from_json(json.loads(path.read_text()))


# -- members ---------------------------------------------------------------------------------
def member_available(name: str) -> bool:
    """Whether an engine's module and model can be loaded here."""
    try:
        return load_member(name, calibrate=False) is not None
    except ConfigError:
        return False


def load_member(name: str, calibrate: bool = True) -> Recogniser | None:
    """A member engine, or None when it is not installed (its module or model missing)."""
    from capd.solving.ocr import _REGISTRY

    if name not in _REGISTRY or name == "auto":
        raise ConfigError(f"unknown OCR engine {name!r} in the combined engine")
    module_name, class_name = _REGISTRY[name]
    try:
        cls = getattr(import_module(module_name), class_name)
    except (ImportError, AttributeError):
        return None
    options = {"calibrate": calibrate} if "calibrate" in signature(cls).parameters else {}
    try:
        engine: Recogniser = cls(**options)
    except (ConfigError, OSError):  # OSError: its model file is missing or unreadable
        return None
    return engine


# -- the decision ----------------------------------------------------------------------------
def noisy_or(confidences: Sequence[float], agreement: float = 1.0) -> float:
    """The chance that at least one of several readers is right, each right with its
    confidence: independent readers (agreement 1), or readers whose agreement counts for
    more (each one after the first multiplies the chance that all are wrong by it)."""
    miss = 1.0
    for c in confidences:
        miss *= 1.0 - c
    return 1.0 - miss * agreement ** max(0, len(confidences) - 1)


@dataclass
class _Group:
    votes: list[tuple[str, Reading]]  # (member, reading), in member order
    score: float = 0.0


def _groups(readings: Sequence[tuple[str, Reading]], spec: ImageSpec,
            agreement: float) -> list[_Group]:
    by_key: dict[str, _Group] = {}
    for name, r in readings:
        if not r.text:
            continue
        key = r.text.lower() if spec.case_sensitive and not spec.math else r.text
        by_key.setdefault(key, _Group([])).votes.append((name, r))
    for g in by_key.values():
        g.score = noisy_or([r.confidence for _, r in g.votes], agreement)
    return sorted(by_key.values(), key=lambda g: -g.score)  # stable: ties keep member order


def decide(readings: Sequence[tuple[str, Reading]], spec: ImageSpec, agreement: float = 1.0
           ) -> tuple[str, float, str]:
    """The winning text, its raw combined score and the member whose reading it is."""
    groups = _groups(readings, spec, agreement)
    if not groups:
        return "", 0.0, ""
    best = groups[0]
    name, reading = max(best.votes, key=lambda v: v[1].confidence)
    # the score treats members as independent whatever ``agreement`` chose the winner:
    # it ranks answers by how sure they are better than the agreement-weighted one
    runner_up = max((noisy_or([r.confidence for _, r in g.votes]) for g in groups[1:]),
                    default=0.0)
    score = noisy_or([r.confidence for _, r in best.votes]) * (1.0 - runner_up)
    if len(best.votes) == 1 and len(groups) > 1 and not spec.math:
        voted = vote_characters(readings, spec)
        # the vote replaces the best answer only when it is surer: a few unsure readings
        # of one length must not outvote a far surer one of another length
        if voted is not None and voted[1] > score:
            return voted[0], voted[1], name
    return reading.text, score, name


def vote_characters(readings: Sequence[tuple[str, Reading]], spec: ImageSpec
                    ) -> tuple[str, float] | None:
    """When no two members agree: a per-position vote among the readings of the most
    supported length (each character weighted by its reading's confidence times its own
    probability). The text and its score (the product of the winning vote shares times
    the noisy-or of the voters' confidences); None without two readings of one length."""
    by_length: dict[int, list[Reading]] = {}
    for _, r in readings:
        if r.text and len(r.chars) == len(r.text):
            by_length.setdefault(len(r.text), []).append(r)
    voters = max(by_length.values(), key=lambda rs: sum(r.confidence for r in rs),
                 default=[])
    if len(voters) < 2:
        return None
    text, share = [], 1.0
    for i in range(len(voters[0].text)):
        weights: dict[str, float] = {}
        spelling: dict[str, tuple[float, str]] = {}
        for r in voters:
            ch, w = r.text[i], r.confidence * r.chars[i]
            key = ch.lower() if spec.case_sensitive else ch
            weights[key] = weights.get(key, 0.0) + w
            if w > spelling.get(key, (-1.0, ""))[0]:
                spelling[key] = (w, ch)
        total = sum(weights.values())
        if total <= 0.0:
            return None
        key = max(weights, key=lambda k: weights[k])
        text.append(spelling[key][1])
        share *= weights[key] / total
    return "".join(text), share * noisy_or([r.confidence for r in voters])


def cascade(policy: Policy, spec: ImageSpec, read: Callable[[str], Reading]) -> Reading:
    """Run the members through ``read`` (name -> that member's Reading) in policy order,
    stopping once the combined score reaches the policy's stop; the combined Reading."""
    readings: list[tuple[str, Reading]] = []
    text, score, winner = "", 0.0, ""
    for name in policy.members:
        readings.append((name, read(name)))
        text, score, winner = decide(readings, spec, policy.agreement)
        if text and score >= policy.stop_after(len(readings)):
            break
    if not text:
        return Reading("", 0.0)
    if spec.case_sensitive and not spec.math:
        text = _spelling(text, policy, readings)
    confidence = policy.calibration(score) if policy.calibration else score
    chars = next(r.chars for n, r in readings if n == winner)
    return Reading(text, confidence, chars if len(chars) == len(text) else ())


def _spelling(text: str, policy: Policy, readings: list[tuple[str, Reading]]) -> str:
    """The winning answer as spelt by its most confident case-aware member, if any."""
    same = [r for n, r in readings if n in policy.case_aware and r.text.lower() == text.lower()]
    return max(same, key=lambda r: r.confidence).text if same else text


class CombinedEngine:
    """Every available member engine behind one Recogniser (see the module docstring)."""

    name = "auto"

    def __init__(self, policy: Policy | None = None,
                 members: dict[str, Recogniser] | None = None) -> None:
        policy = policy or load_policy()
        if members is None:
            members = {}
            for name in policy.members:
                engine = load_member(name)
                if engine is not None:
                    members[name] = engine
        if not members:
            raise ConfigError("the combined OCR engine has no member engine installed")
        self.members = members
        self.policy = replace(policy, members=tuple(n for n in policy.members if n in members))

    def read(self, image: bytes, spec: ImageSpec) -> Reading:
        return cascade(self.policy, spec, lambda name: self.members[name].read(image, spec))
