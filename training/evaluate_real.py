"""Every recogniser engine and the combined one side by side (issue 14).

    python -m training.evaluate_real --calibrate      # fit the confidence maps, then report
    python -m training.evaluate_real --real 150 --synth 40

Sets (all held out from every engine's training):
- REAL: the held-out 20% of each scheme of the labelled real captchas (training/datasets.py,
  ``--real`` images per scheme, the first ones of the split order);
- SYNTH: training/evaluate.py's synthetic test set (test fonts and seeds);
- UNSEEN: captchas of generator packages capd never trained on (evaluate.build_external).

Task options are the natural ones: digit-only schemes and styles are read with numeric=1,
arithmetic with math=true (the answer is scored), everything else with case=false. Scoring
is exact match, case-insensitive (most of the real labels carry no case).

Reported per engine: accuracy per scheme and overall, latency per image on one core (p50;
every engine runs one inference on one thread), and the threshold table: the share of
answers returned, and the share of those right, at recognizingThreshold 50/70/90/95.
Beside the engines, "any engine": the share of images some single engine reads right, the
most that choosing among the engines' answers could reach.

``--calibrate`` first reads the calibration sets (the calibration slice of each real
scheme's TRAIN split, datasets.finetune_split, and the synthetic calibration fonts) with
raw confidences, fits each engine's isotonic map into models/calibration_<engine>.json
(capd: models/calibration.json), then fits the combined engine's map (models/auto.json).
Readings are cached under training/out/readings/ (``--fresh`` ignores the cache).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

from capd.domain.tasks import ImageSpec
from capd.solving.ocr import combined
from capd.solving.ocr.base import Reading, Recogniser, UnreadableImage
from capd.solving.ocr.onnx_engine import Calibration
from training import datasets

MODELS_DIR = os.path.join(os.path.dirname(__file__), "..", "capd", "solving", "ocr", "models")
CACHE_DIR = os.path.join(os.path.dirname(__file__), "out", "readings")
REPORT_THRESHOLDS = (50, 70, 90, 95)
DIGIT_SCHEMES = ("web_digits_binary", "web_digits_dotted_dark")
BASE_ENGINES = ("capd", "capd-web", "ddddocr", "ddddocr-beta", "rapidocr", "finetuned")


@dataclass(frozen=True)
class Item:
    group: str      # REAL / SYNTH / UNSEEN
    scheme: str     # scheme folder or synthetic style
    key: str        # stable id for the cache
    image: bytes
    expected: str   # lower case unless digits / math answers
    spec: ImageSpec


def schemes() -> list[str]:
    """The real schemes present here (none when the datasets folder is absent)."""
    root = datasets.datasets_root()
    return [s for s in datasets.SCHEMES if os.path.isfile(os.path.join(root, s, "labels.csv"))]


def held_out(scheme: str, limit: int) -> list[tuple[str, str]]:
    """The first ``limit`` (path, label) of a scheme's held-out split, in split order."""
    return datasets.split(scheme)[1][:limit]


def real_items(per_scheme: int, calibration: bool) -> list[Item]:
    """Held-out images, or (calibration=True) the calibration slice of the train split
    (datasets.finetune_split: the last 10% of the train split, never trained on)."""
    items = []
    for scheme in schemes():
        samples = (datasets.finetune_split(scheme)[1][:per_scheme] if calibration
                   else held_out(scheme, per_scheme))
        spec = ImageSpec(numeric=1) if scheme in DIGIT_SCHEMES else ImageSpec(
            case_sensitive=False)
        for path, label in samples:
            with open(path, "rb") as f:
                items.append(Item("REAL", scheme, f"{scheme}/{os.path.basename(path)}",
                                  f.read(), label.lower(), spec))
    return items


def synthetic_items(per_style: int, calibration: bool) -> list[Item]:
    from training import config
    from training import evaluate as ev

    split = "calib" if calibration else "test"
    out = []
    for n, it in enumerate(ev.build_set(split, per_style, config.SEEDS[split])):
        out.append(_synth_item("SYNTH", it, f"{split}/{per_style}/{it.style}/{n}"))
    if not calibration:
        for n, it in enumerate(ev.build_external(per_style, config.SEEDS["test"] + 77)):
            out.append(_synth_item("UNSEEN", it, f"ext/{per_style}/{it.style}/{n}"))
    return out


def _synth_item(group: str, it, key: str) -> Item:  # type: ignore[no-untyped-def]
    if it.style == "math":
        return Item(group, it.style, key, it.png, it.answer, ImageSpec(math=True))
    if it.style == "digits":
        return Item(group, it.style, key, it.png, it.label, ImageSpec(numeric=1))
    return Item(group, it.style, key, it.png, it.label.lower(), ImageSpec(case_sensitive=False))


# -- reading, with a cache of raw readings per engine ----------------------------------------
def read_all(name: str, items: list[Item], tag: str, fresh: bool) -> list[dict]:
    """One record per item: text, per-character probabilities, ms (one core). Engines are
    loaded uncalibrated: the calibrated confidence is applied afterwards."""
    path = os.path.join(CACHE_DIR, f"{tag}_{name}.json")
    cache: dict[str, dict] = {}
    if not fresh and os.path.exists(path):
        with open(path) as f:
            cache = json.load(f)
    missing = [it for it in items if it.key not in cache]
    if missing:
        engine = combined.load_member(name, calibrate=False)
        if engine is None:
            return []
        engine.read(missing[0].image, missing[0].spec)  # warm up
        for it in missing:
            t0 = time.perf_counter()
            try:
                r = engine.read(it.image, it.spec)
            except UnreadableImage:
                r = Reading("", 0.0)
            ms = (time.perf_counter() - t0) * 1000
            cache[it.key] = {"text": r.text, "raw": r.confidence, "chars": list(r.chars),
                             "ms": ms}
        os.makedirs(CACHE_DIR, exist_ok=True)
        with open(path, "w") as f:
            json.dump(cache, f)
    return [cache[it.key] for it in items]


def raw_of(rec: dict) -> float:
    """The uncalibrated confidence (engines were loaded with calibrate=False)."""
    if "raw" in rec:
        return float(rec["raw"]) if rec["text"] else 0.0
    p = 1.0  # caches written before "raw" was stored
    for c in rec["chars"]:
        p *= c
    return p if rec["text"] else 0.0


# engines whose confidence maps this script fits; others (finetuned) ship their own
FITTED_HERE = ("capd", "capd-web", "ddddocr", "ddddocr-beta", "rapidocr")


def calibration_of(name: str) -> Callable[[float], float] | None:
    """The map an engine applies to its raw confidence, as shipped now."""
    if name in FITTED_HERE:
        return Calibration.load("calibration.json" if name == "capd" else
                               f"calibration_{name}.json")
    engine = combined.load_member(name)
    cal = getattr(engine, "calibration", None) or getattr(engine, "_calibration", None)
    return cal if callable(cal) else None


# -- fitting ---------------------------------------------------------------------------------
def fit_engine_calibration(name: str, items: list[Item], recs: list[dict]) -> None:
    from training.evaluate import fit_isotonic

    pairs = [(raw_of(r), r["text"].lower() == it.expected) for it, r in zip(items, recs,
                                                                           strict=True)]
    xs, ys = fit_isotonic(pairs)
    groups = sorted({it.group for it in items})
    out = {"method": "isotonic (PAV) on raw CTC path confidence, Wilson 90% lower bound "
                     "per block (training/evaluate_real.py --calibrate)",
           "fitted_on": f"{len(pairs)} readings: {', '.join(groups)} calibration sets "
                        "(real: calibration slice of each scheme's train split; synthetic: "
                        "calibration fonts)",
           "raw": [round(x, 6) for x in xs], "calibrated": [round(y, 6) for y in ys]}
    filename = "calibration.json" if name == "capd" else f"calibration_{name}.json"
    with open(os.path.join(MODELS_DIR, filename), "w") as f:
        json.dump(out, f, indent=1)
    print(f"{name}: calibration with {len(xs)} knots from {len(pairs)} readings -> {filename}")


def calibrated(name: str, recs: list[dict]) -> list[Reading]:
    """Raw cached readings -> Readings with the engine's shipped calibration applied."""
    cal = calibration_of(name)
    out = []
    for r in recs:
        raw = raw_of(r)
        out.append(Reading(r["text"], cal(raw) if cal else raw, tuple(r.get("chars", ()))))
    return out


def simulate_auto(policy: combined.Policy, items: list[Item],
                  per_engine: dict[str, list[Reading]], ms: dict[str, list[float]]
                  ) -> tuple[list[Reading], list[float]]:
    """The combined engine's answers from cached member readings (the same code path as
    CombinedEngine.read: combined.cascade) and the sum of the members' times."""
    answers, times = [], []
    for i, it in enumerate(items):
        ran: list[str] = []

        def reader(name: str, i: int = i, ran: list[str] = ran) -> Reading:
            ran.append(name)
            return per_engine[name][i]

        answers.append(combined.cascade(policy, it.spec, reader))
        times.append(sum(ms[n][i] for n in ran))
    return answers, times


STOP_GRID = (0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.93, 0.95, 0.97, 0.98, 0.99, 1.01)
FIRST_STOP_GRID = (None, 0.5, 0.7, 0.9, 0.95, 0.98)  # None: the first member stops at stop_at
AGREEMENT_GRID = (1.0, 0.5, 0.3, 0.1)


def fit_policy(names: list[str], items: list[Item], answers: dict[str, list[Reading]],
               ms: dict[str, list[float]], tolerance: float = 0.005) -> combined.Policy:
    """Members (a subset in any order that starts with the cheapest engine or with the
    single most accurate one), stop_at and first_stop_at: the most accurate on the
    calibration set, and among those within ``tolerance`` of it the cheapest on average
    (the mean, not the median: the mean is what a busy server pays per image); then the
    isotonic map of its combined score. A cheaper policy is taken only when its map makes
    at least half as many answers 90% sure as the near-best policy that makes the most
    (SURE_SHARE_KEPT); otherwise the next cheapest. (Cheapest first with one stop lost:
    capd's CRNN is sure of wrong answers on some real schemes, and stopping there cost the
    fine-tuned engine's lead; a separate, higher stop for the first member alone is what
    first_stop_at is for.)"""
    from itertools import permutations

    from training.evaluate import fit_isotonic

    cost = {n: statistics.median(ms[n]) for n in names}
    order = sorted(names, key=lambda n: cost[n])
    aware = tuple(n for n in combined.DEFAULT_CASE_AWARE if n in names)
    alone = {n: sum(right(it, r) for it, r in zip(items, answers[n], strict=True))
             for n in names}
    firsts = {order[0], max(names, key=lambda n: (alone[n], -cost[n]))}
    trials = []
    for k in range(1, len(order) + 1):
        for subset in permutations(order, k):
            if subset[0] not in firsts:
                continue
            for stop in STOP_GRID:
                for first in FIRST_STOP_GRID if k > 1 else (None,):
                    if first is not None and first == stop:
                        continue
                    for agreement in AGREEMENT_GRID if k > 1 else (1.0,):
                        p = combined.Policy(subset, stop, aware, None, agreement, first)
                        out, times = simulate_auto(p, items, answers, ms)
                        acc = sum(right(it, r) for it, r in zip(items, out, strict=True))
                        trials.append((acc / len(items), statistics.fmean(times), p))
    top = max(t[0] for t in trials)
    near = sorted((t for t in trials if t[0] >= top - tolerance), key=lambda t: (t[1], -t[0]))
    ranked = sorted(trials, key=lambda t: (-t[0], t[1]))
    print("auto candidates (accuracy, mean ms, members, stop_at, first_stop_at, agreement),"
          " best first:")
    for acc, mean, p in ranked[:12]:
        print(f"  {acc:.3f} {mean:7.1f}  {','.join(p.members)}  {p.stop_at}  {p.first_stop_at}"
              f"  {p.agreement}")

    def fitted(p: combined.Policy) -> tuple[combined.Policy, float]:
        out, _ = simulate_auto(p, items, answers, ms)
        pairs = [(r.confidence, right(it, r)) for it, r in zip(items, out, strict=True)]
        xs, ys = fit_isotonic(pairs)
        return replace(p, calibration=Calibration(xs, ys)), sure_share(pairs, xs, ys)

    # the cheapest near-best policy that makes at least half as many answers 90% sure as
    # the near-best policy that makes the most: a cheap policy whose map never reaches 90
    # (one wrong answer among its very highest scores caps the conservative map) would make
    # recognizingThreshold 90 return nothing
    candidates = [(a, m, *fitted(p)) for a, m, p in near]  # cheapest first
    reference = max(c[3] for c in candidates)
    acc, mean, chosen, share = next(c for c in candidates
                                    if c[3] >= reference * SURE_SHARE_KEPT)
    print(f"chosen: {acc:.3f} at mean {mean:.1f} ms (tolerance {tolerance}); "
          f"{share:.0%} of its answers at least {SURE_AT:.0%} sure (at most {reference:.0%}"
          " among the near-best)")
    return chosen


SURE_AT = 0.9
SURE_SHARE_KEPT = 0.5


def sure_share(pairs: list[tuple[float, bool]], xs: list[float], ys: list[float]) -> float:
    """The share of (confidence, right) readings that the isotonic map (xs, ys) makes at
    least SURE_AT likely right: what recognizingThreshold 90 would return."""
    cal = Calibration(xs, ys)
    return sum(cal(c) >= SURE_AT for c, _ in pairs) / max(1, len(pairs))


# -- report ----------------------------------------------------------------------------------
def right(it: Item, r: Reading) -> bool:
    return bool(r.text) and r.text.lower() == it.expected


def report(names: list[str], items: list[Item], answers: dict[str, list[Reading]],
           ms: dict[str, list[float]]) -> dict:
    groups: dict[str, list[int]] = {}
    for i, it in enumerate(items):
        groups.setdefault(f"{it.group}:{it.scheme}", []).append(i)
    for g in ("REAL", "SYNTH", "UNSEEN"):
        idx = [i for i, it in enumerate(items) if it.group == g]
        if idx:
            groups[f"{g} overall"] = idx
    result: dict = {"accuracy": {}, "any_engine": {}, "p50_ms": {}, "thresholds": {}}
    # the share some single engine reads right: what no choice among their answers can pass
    singles = [n for n in names if n != "auto"]
    width = max(len(k) for k in groups) + 2
    print("\nexact match, case-insensitive (n per row); any engine: some single engine right")
    print(f"{'set':<{width}}{'n':>5}" + "".join(f"{n:>14}" for n in names) + f"{'any engine':>14}")
    for g, idx in groups.items():
        row = {}
        for n in names:
            row[n] = sum(right(items[i], answers[n][i]) for i in idx) / len(idx)
        result["accuracy"][g] = row
        anyone = sum(any(right(items[i], answers[n][i]) for n in singles) for i in idx) / len(idx)
        result["any_engine"][g] = anyone
        print(f"{g:<{width}}{len(idx):>5}" + "".join(f"{row[n]:>14.3f}" for n in names)
              + f"{anyone:>14.3f}")
    print(f"{'p50 ms, 1 core':<{width}}{len(items):>5}" + "".join(
        f"{statistics.median(ms[n]):>14.1f}" for n in names))
    print(f"{'mean ms, 1 core':<{width}}{len(items):>5}" + "".join(
        f"{statistics.fmean(ms[n]):>14.1f}" for n in names))
    result["p50_ms"] = {n: statistics.median(ms[n]) for n in names}
    result["mean_ms"] = {n: statistics.fmean(ms[n]) for n in names}
    print("\nthreshold: returned share / right share of returned (REAL + SYNTH + UNSEEN)")
    print(f"{'threshold':<{width}}{'':>5}" + "".join(f"{n:>14}" for n in names))
    for t in REPORT_THRESHOLDS:
        cells = []
        result["thresholds"][t] = {}
        for n in names:
            kept = [right(it, r) for it, r in zip(items, answers[n], strict=True)
                    if r.text and r.confidence * 100 >= t]
            frac = len(kept) / len(items)
            acc = sum(kept) / len(kept) if kept else float("nan")
            result["thresholds"][t][n] = (frac, acc)
            cells.append(f"{frac:.2f}/{acc:.3f}")
        print(f"{t:<{width}}{'':>5}" + "".join(f"{c:>14}" for c in cells))
    return result


def latency(names: list[str], items: list[Item], every: int) -> dict[str, float]:
    """p50 ms per image on one core, every engine (auto included) on the same images in
    turn, image by image, so that a changing machine load hits all of them alike."""
    engines: dict[str, Recogniser] = {"auto": combined.CombinedEngine()}
    for n in names:
        member = combined.load_member(n)
        if member is not None:
            engines[n] = member
    sub = items[::every]
    for e in engines.values():
        e.read(sub[0].image, sub[0].spec)
    ms: dict[str, list[float]] = {n: [] for n in engines}
    for it in sub:
        for n, e in engines.items():
            t0 = time.perf_counter()
            e.read(it.image, it.spec)
            ms[n].append((time.perf_counter() - t0) * 1000)
    p50 = {n: statistics.median(v) for n, v in ms.items()}
    print(f"\np50 ms per image on one core, engines interleaved on {len(sub)} images: "
          + ", ".join(f"{n} {v:.1f}" for n, v in p50.items()))
    return p50


def time_auto(items: list[Item], every: int, simulated: list[Reading]) -> dict:
    """The combined engine itself (not the simulation from cached readings) on every n-th
    image: its p50 ms on one core, and how often it agrees with the simulation."""
    engine = combined.CombinedEngine()
    engine.read(items[0].image, items[0].spec)
    ms, same = [], 0
    sub = list(range(0, len(items), every))
    for i in sub:
        t0 = time.perf_counter()
        r = engine.read(items[i].image, items[i].spec)
        ms.append((time.perf_counter() - t0) * 1000)
        same += r.text == simulated[i].text
    p50 = statistics.median(ms)
    print(f"\ncombined engine run for real on {len(sub)} images: p50 {p50:.1f} ms, "
          f"same answer as the simulation {same}/{len(sub)}")
    return {"n": len(sub), "p50_ms": p50, "same": same}


def length_table(items: list[Item]) -> dict[str, dict]:
    """The combined engine on the real held-out images read twice: with the natural task
    options, and with the scheme's answer lengths given as minLength/maxLength (the
    shortest and longest label of its train split, what a client who knows its site
    would send). Exact match ignoring case, per scheme."""
    from dataclasses import replace as with_fields

    engine = combined.CombinedEngine()
    rows: dict[str, dict] = {}
    for scheme in dict.fromkeys(it.scheme for it in items if it.group == "REAL"):
        lengths = [len(label) for _, label in datasets.split(scheme)[0]]
        sub = [it for it in items if it.scheme == scheme and it.group == "REAL"]
        bounded = [with_fields(it.spec, min_length=min(lengths), max_length=max(lengths))
                   for it in sub]
        rows[scheme] = {
            "lengths": f"{min(lengths)}-{max(lengths)}",
            "natural": sum(right(it, engine.read(it.image, it.spec)) for it in sub) / len(sub),
            "bounded": sum(right(it, engine.read(it.image, spec))
                           for it, spec in zip(sub, bounded, strict=True)) / len(sub)}
    print("\nauto with the scheme's answer lengths as minLength/maxLength (real held-out)")
    print(f"{'scheme':<28}{'lengths':>9}{'natural':>10}{'bounded':>10}")
    for scheme, row in rows.items():
        print(f"{scheme:<28}{row['lengths']:>9}{row['natural']:>10.3f}"
              f"{row['bounded']:>10.3f}")
    return rows


CASED_SCHEMES = ("generic_colour_upper", "web_amazon_caps", "web_securimage_grey",
                 "web_swust_caps_colour")


def case_table(names: list[str], per_scheme: int, per_style: int) -> dict:
    """Case-sensitive exact match with case:true, on the held-out real schemes whose labels
    carry their case and on the synthetic test styles with letters (mixed case). ddddocr's
    engines are shown with and without borrowing the case of same-shape letters."""
    from capd.solving.ocr.ddddocr_engine import DdddOcrBetaEngine, DdddOcrEngine

    items = [it for it in real_items(per_scheme, False) if it.scheme in CASED_SCHEMES]
    labels = {}
    for scheme in CASED_SCHEMES:
        for path, label in held_out(scheme, per_scheme):
            labels[f"{scheme}/{os.path.basename(path)}"] = label
    from training import config
    from training import evaluate as ev

    synth = [it for it in ev.build_set("test", per_style, config.SEEDS["test"])
             if it.style not in ("digits", "math") and it.label.lower() != it.label.upper()
             and it.label != it.label.lower() and it.label != it.label.upper()]
    cased = [(it.scheme, it.image, labels[it.key]) for it in items]
    cased += [("SYNTH mixed-case", it.png, it.label) for it in synth]
    engines: dict[str, Recogniser] = {}
    for n in names:
        if n.startswith("ddddocr"):
            cls = DdddOcrBetaEngine if n == "ddddocr-beta" else DdddOcrEngine
            engines[f"{n} (own case)"] = cls(restore_case=False)
        member = combined.load_member(n) if n != "auto" else combined.CombinedEngine()
        if member is not None:
            engines[n] = member
    spec = ImageSpec()
    rows: dict[str, dict[str, float]] = {}
    for scheme in [*CASED_SCHEMES, "SYNTH mixed-case"]:
        sub = [(png, label) for sc, png, label in cased if sc == scheme]
        if not sub:
            continue
        rows[f"{scheme} ({len(sub)})"] = {
            name: sum(e.read(png, spec).text == label for png, label in sub) / len(sub)
            for name, e in engines.items()}
    print("\ncase-sensitive exact match with case:true")
    width = max(len(k) for k in rows) + 2
    print(f"{'set':<{width}}" + "".join(f"{n:>22}" for n in engines))
    for k, row in rows.items():
        print(f"{k:<{width}}" + "".join(f"{v:>22.3f}" for v in row.values()))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--real", type=int, default=150, help="held-out images per real scheme")
    ap.add_argument("--synth", type=int, default=40, help="synthetic images per style")
    ap.add_argument("--calib-real", type=int, default=80,
                    help="calibration images per real scheme (--calibrate)")
    ap.add_argument("--calib-synth", type=int, default=40)
    ap.add_argument("--engines", default=",".join(BASE_ENGINES))
    ap.add_argument("--calibrate", action="store_true")
    ap.add_argument("--members", default="", metavar="NAMES",
                    help="with --calibrate: the engines the combined policy may use"
                         " (default: every engine evaluated; the fit's time grows"
                         " factorially with their number)")
    ap.add_argument("--fit-engine", default="", metavar="NAME",
                    help="only fit this engine's calibration map (fresh readings), then stop")
    ap.add_argument("--tolerance", type=float, default=0.005,
                    help="accuracy the combined policy may give up for speed")
    ap.add_argument("--fresh", action="store_true")
    ap.add_argument("--json", default="")
    ap.add_argument("--latency", type=int, default=0,
                    help="also time every engine interleaved on every n-th image")
    ap.add_argument("--time-auto", type=int, default=0,
                    help="also run the real combined engine on every n-th image: p50 ms")
    ap.add_argument("--case", type=int, default=0,
                    help="also the case table: this many held-out images per cased scheme")
    ap.add_argument("--lengths", action="store_true",
                    help="also run auto on the real held-out images with each scheme's"
                         " answer lengths as minLength/maxLength")
    args = ap.parse_args()
    if args.fit_engine:
        if args.fit_engine not in FITTED_HERE:
            raise SystemExit(f"--fit-engine: one of {', '.join(FITTED_HERE)}")
        cal_items = real_items(args.calib_real, True) + synthetic_items(args.calib_synth, True)
        fit_engine_calibration(args.fit_engine, cal_items,
                               read_all(args.fit_engine, cal_items, "calib", True))
        return
    names = [n for n in args.engines.split(",") if combined.member_available(n)]
    print(f"engines: {', '.join(names)}")

    if args.calibrate:
        cal_items = real_items(args.calib_real, True) + synthetic_items(args.calib_synth, True)
        print(f"calibration set: {len(cal_items)} images")
        cal_answers: dict[str, list[Reading]] = {}
        cal_ms: dict[str, list[float]] = {}
        for n in names:
            recs = read_all(n, cal_items, "calib", args.fresh)
            if n in FITTED_HERE:
                fit_engine_calibration(n, cal_items, recs)
            cal_answers[n] = calibrated(n, recs)
            cal_ms[n] = [r["ms"] for r in recs]
        members = [n for n in args.members.split(",") if n in names] if args.members else names
        policy = fit_policy(members, cal_items, cal_answers, cal_ms, args.tolerance)
        with open(os.path.join(MODELS_DIR, combined.POLICY_FILE), "w") as f:
            json.dump({"fitted_on": f"{len(cal_items)} calibration images "
                                    "(training/evaluate_real.py --calibrate)",
                       **policy.to_json()}, f, indent=1)
        print(f"auto: members {policy.members}, stop at {policy.stop_at} (first member"
              f" alone: {policy.first_stop_at}), agreement {policy.agreement}")

    items = real_items(args.real, False) + synthetic_items(args.synth, False)
    print(f"evaluation: {len(items)} images ({args.real} held-out per real scheme, "
          f"{args.synth} per synthetic style)")
    answers: dict[str, list[Reading]] = {}
    ms: dict[str, list[float]] = {}
    for n in names:
        recs = read_all(n, items, "eval", args.fresh)
        answers[n] = calibrated(n, recs)
        ms[n] = [r["ms"] for r in recs]
    policy = combined.load_policy()
    policy = replace(policy, members=tuple(n for n in policy.members if n in answers))
    answers["auto"], ms["auto"] = simulate_auto(policy, items, answers, ms)
    result = report([*names, "auto"], items, answers, ms)
    if args.latency:
        result["latency_p50_ms"] = latency(names, items, args.latency)
    if args.time_auto:
        result["auto_measured"] = time_auto(items, args.time_auto, answers["auto"])
    if args.case:
        result["case"] = case_table([*names, "auto"], args.case, args.synth)
    if args.lengths:
        result["lengths"] = length_table(items)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1)


if __name__ == "__main__":
    main()
