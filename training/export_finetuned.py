"""Export the fine-tuned network (training/finetune.py) for the "finetuned" engine,
quantise it, calibrate its confidence and evaluate it on the held-out split.

    python -m training.export_finetuned [--checkpoint training/out/finetune.pt]
    python -m training.export_finetuned --evaluate-only      # the shipped files

Steps:
1. ONNX export (opset 17, dynamic batch and width) of the checkpoint, float32.
2. Dynamic int8 quantisation with ONNX Runtime (weights int8, activations quantised at
   run time, like ddddocr's own file). The int8 file is kept when its exact accuracy on
   the calibration slice is within --max-drop (0.5 point) of the float file's; else
   the float file ships.
3. Calibration: isotonic map (training.evaluate.fit_isotonic) from the raw CTC path
   confidence to the probability of being right, fitted on the calibration slice
   (datasets.finetune_split: the last 10% of each scheme's train split, never trained
   on, not part of the held-out 20%), twice: the map of single readings sets the
   second look's trigger (the raw confidence at which half are right), then the map is
   fitted on the engine's final readings. Written into models/finetuned.json with the
   charset (``--recalibrate``: only this step, for the shipped file).
4. Held-out evaluation (the full 20% split of every scheme): exact case-insensitive
   accuracy per scheme of this engine and of ddddocr's default, and median latency per
   image on one core (one ONNX Runtime thread, image bytes in, answer out).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from capd.domain.tasks import ImageSpec
from capd.solving.ocr.finetuned_engine import (
    META_FILE,
    MODEL_FILE,
    SECOND_LOOK_AT,
    SECOND_LOOK_STRETCH,
    FinetunedEngine,
)
from capd.solving.ocr.onnx_engine import Calibration
from training import datasets
from training.evaluate import fit_isotonic
from training.finetune import CHECKPOINT, N_CLASSES
from training.model import CHARSET

MODELS_DIR = "capd/solving/ocr/models"
FLOAT_OUT = "training/out/finetuned_fp32.onnx"
INT8_OUT = "training/out/finetuned_int8.onnx"
CI = ImageSpec(case_sensitive=False)
CS = ImageSpec(case_sensitive=True)


def export_float(checkpoint: str, out: str) -> dict:
    import torch

    from capd.modules.net import DdddNet

    ck = torch.load(checkpoint, map_location="cpu", weights_only=False)
    if ck.get("charset") != CHARSET:
        raise SystemExit("checkpoint charset differs from training.model.CHARSET")
    net = DdddNet(n_classes=N_CLASSES)
    net.load_state_dict(ck["model"])
    net.eval()
    dummy = torch.rand(1, 1, 64, 192)
    torch.onnx.export(net, (dummy,), out, input_names=["image"], output_names=["logits"],
                      dynamic_axes={"image": {0: "batch", 3: "width"},
                                    "logits": {0: "frames", 1: "batch"}},
                      opset_version=17, dynamo=False)
    return {"step": ck["step"], "seen": ck["seen"], "train_seconds": round(ck["elapsed_s"]),
            "grey": ck.get("grey", "luminance"), "crop": bool(ck.get("crop", False))}


def quantise(src: str, dst: str) -> None:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(src, dst, weight_type=QuantType.QUInt8)


def write_meta(extra: dict, calibration: dict | None, second_look: dict | None = None
               ) -> None:
    meta = {"charset": CHARSET, "input_height": 64, **extra}
    if calibration:
        meta["calibration"] = calibration
    if second_look:
        meta["second_look"] = second_look
    with open(os.path.join(MODELS_DIR, META_FILE), "w") as fh:
        json.dump(meta, fh, indent=1, ensure_ascii=False)


def calibrate(model: bytes, extra: dict, calib_rows: dict[str, list[tuple[str, str]]]
              ) -> None:
    """Fit the second look's trigger and the calibration map of ``model`` on the
    calibration slice, into models/finetuned.json. First the map of single readings gives
    the raw confidence at which half of the readings are right: below it the engine
    reads the image a second time, stretched. Then the map is fitted again on the
    engine's final readings (with that second look), the one that ships."""
    n_cal = sum(len(r) for r in calib_rows.values())
    _, plain, _ = readings(FinetunedEngine(model, calibrate=False, second_look=False),
                           calib_rows)
    xs, ys = fit_isotonic(plain)
    look = {"below": round(Calibration(xs, ys).raw_reaching(SECOND_LOOK_AT), 6),
            "stretch": SECOND_LOOK_STRETCH,
            "why": f"raw confidence below which fewer than {SECOND_LOOK_AT:.0%} of single"
                   " readings of the calibration slice are right"}
    write_meta(extra, None, look)
    _, pairs, _ = readings(FinetunedEngine(model, calibrate=False), calib_rows)
    xs, ys = fit_isotonic(pairs)
    write_meta(extra, {
        "method": "isotonic (PAV) on raw CTC path confidence, Wilson 90% lower bound "
                  "per block",
        "fitted_on": f"{len(pairs)} readings of {n_cal} real captchas: the last 10% of "
                     "each scheme's train split, never trained on (with the second look)",
        "raw": [round(x, 6) for x in xs], "calibrated": [round(y, 6) for y in ys]}, look)
    print(f"second look below raw {look['below']} (calibrated {SECOND_LOOK_AT} for a"
          f" single reading), stretch {SECOND_LOOK_STRETCH}; calibration: {len(xs)} knots")


def rows_of(which: str) -> dict[str, list[tuple[str, str]]]:
    """Per scheme (path, label): 'calib' = calibration slice, 'held' = held-out 20%."""
    out = {}
    for scheme in datasets.SCHEMES:
        if which == "calib":
            out[scheme] = datasets.finetune_split(scheme)[1]
        else:
            out[scheme] = datasets.split(scheme)[1]
    return out


def readings(engine, rows: dict[str, list[tuple[str, str]]], with_cs: bool = True
             ) -> tuple[dict[str, float], list[tuple[float, bool]], list[float]]:
    """Exact case-insensitive accuracy per scheme, (raw confidence, right) pairs over
    case-insensitive readings and, for schemes whose labels carry case, case-sensitive
    ones, and milliseconds per image (the case-insensitive read)."""
    acc: dict[str, float] = {}
    pairs: list[tuple[float, bool]] = []
    ms: list[float] = []
    for scheme, items in rows.items():
        right = 0
        for path, label in items:
            with open(path, "rb") as fh:
                data = fh.read()
            t0 = time.perf_counter()
            r = engine.read(data, CI)
            ms.append((time.perf_counter() - t0) * 1000)
            ok = r.text == label.lower()
            right += ok
            pairs.append((r.confidence, ok))
            if with_cs and scheme not in datasets.CASE_INSENSITIVE:
                rc = engine.read(data, CS)
                pairs.append((rc.confidence, rc.text == label))
        acc[scheme] = right / len(items)
    return acc, pairs, ms


def baseline(engine, held: dict[str, list[tuple[str, str]]], path: str) -> dict[str, float]:
    """ddddocr's held-out accuracy per scheme, cached in ``path`` (it does not change)."""
    if path and os.path.exists(path):
        with open(path) as fh:
            return json.load(fh)
    acc, _, _ = readings(engine, held, with_cs=False)
    if path:
        with open(path, "w") as fh:
            json.dump(acc, fh, indent=1)
    return acc


def p50_ms(engines: dict, held: dict[str, list[tuple[str, str]]], per_scheme: int
           ) -> dict[str, float]:
    """Median milliseconds per read (case-insensitive spec), engines interleaved image
    by image so that both see the same machine load."""
    times: dict[str, list[float]] = {k: [] for k in engines}
    for items in held.values():
        for path, _ in items[:per_scheme]:
            with open(path, "rb") as fh:
                data = fh.read()
            for name, engine in engines.items():
                t0 = time.perf_counter()
                engine.read(data, CI)
                times[name].append((time.perf_counter() - t0) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def table(results: dict[str, dict[str, float]], n: dict[str, int]) -> str:
    names = list(results)
    lines = [f"{'scheme':<26}{'n':>5}" + "".join(f"{k:>12}" for k in names)]
    for scheme in datasets.SCHEMES:
        lines.append(f"{scheme:<26}{n[scheme]:>5}"
                     + "".join(f"{results[k][scheme]:>12.3f}" for k in names))
    total = sum(n.values())
    lines.append(f"{'ALL (image-weighted)':<26}{total:>5}" + "".join(
        f"{sum(results[k][s] * n[s] for s in n) / total:>12.3f}" for k in names))
    lines.append(f"{'MEAN (per scheme)':<26}{'':>5}" + "".join(
        f"{statistics.mean(results[k].values()):>12.3f}" for k in names))
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", default=CHECKPOINT)
    ap.add_argument("--max-drop", type=float, default=0.005)
    ap.add_argument("--evaluate-only", action="store_true")
    ap.add_argument("--recalibrate", action="store_true",
                    help="keep the shipped model file; fit its second look and"
                         " calibration again, then evaluate")
    ap.add_argument("--no-ddddocr", action="store_true")
    ap.add_argument("--json", default="training/out/finetuned_eval.json")
    ap.add_argument("--baseline", default="training/out/ddddocr_heldout.json",
                    help="cache of ddddocr's held-out accuracy ('' : recompute)")
    ap.add_argument("--baseline-only", action="store_true",
                    help="only compute ddddocr's held-out accuracy into --baseline")
    ap.add_argument("--latency-per-scheme", type=int, default=30)
    args = ap.parse_args()
    os.makedirs("training/out", exist_ok=True)
    calib_rows = rows_of("calib")
    report: dict = {}
    if args.baseline_only:
        from capd.solving.ocr.ddddocr_engine import DdddOcrEngine

        print(json.dumps(baseline(DdddOcrEngine(), rows_of("held"), args.baseline)))
        return

    if args.recalibrate:
        with open(os.path.join(MODELS_DIR, META_FILE)) as fh:
            meta = json.load(fh)
        extra = {k: v for k, v in meta.items()
                 if k not in ("charset", "input_height", "calibration", "second_look")}
        with open(os.path.join(MODELS_DIR, MODEL_FILE), "rb") as fh:
            calibrate(fh.read(), extra, calib_rows)
    elif not args.evaluate_only:
        extra = export_float(args.checkpoint, FLOAT_OUT)
        quantise(FLOAT_OUT, INT8_OUT)
        with open(FLOAT_OUT, "rb") as fh:
            fp32 = fh.read()
        with open(INT8_OUT, "rb") as fh:
            int8 = fh.read()
        write_meta(extra, None)
        acc_f, _, _ = readings(FinetunedEngine(fp32, calibrate=False), calib_rows, False)
        acc_q, _, _ = readings(FinetunedEngine(int8, calibrate=False), calib_rows, False)
        n_cal = {s: len(r) for s, r in calib_rows.items()}
        print("calibration slice, float32 vs int8:")
        print(table({"float32": acc_f, "int8": acc_q}, n_cal))
        mean_f = sum(acc_f[s] * n_cal[s] for s in n_cal) / sum(n_cal.values())
        mean_q = sum(acc_q[s] * n_cal[s] for s in n_cal) / sum(n_cal.values())
        chosen = int8 if mean_f - mean_q <= args.max_drop else fp32
        kind = "int8 (dynamic)" if chosen is int8 else "float32"
        print(f"shipping {kind}: {len(chosen) / 1e6:.1f} MB "
              f"(float32 {len(fp32) / 1e6:.1f} MB, int8 {len(int8) / 1e6:.1f} MB)")
        with open(os.path.join(MODELS_DIR, MODEL_FILE), "wb") as fh:
            fh.write(chosen)
        extra["weights"] = kind
        calibrate(chosen, extra, calib_rows)
        report["calibration_slice"] = {"float32": acc_f, "int8": acc_q, "shipped": kind}

    held = rows_of("held")
    n_held = {s: len(r) for s, r in held.items()}
    engine = FinetunedEngine()
    acc_ft, pairs_ft, _ = readings(engine, held, with_cs=False)
    acc_one, _, _ = readings(FinetunedEngine(second_look=False), held, with_cs=False)
    results = {"finetuned": acc_ft, "one look": acc_one}
    ddddocr = None
    if not args.no_ddddocr:
        from capd.solving.ocr.ddddocr_engine import DdddOcrEngine

        ddddocr = DdddOcrEngine()
        results["ddddocr"] = baseline(ddddocr, held, args.baseline)
    print("\nheld-out 20% split, exact match ignoring case:")
    print(table(results, n_held))
    latency = p50_ms({"finetuned": engine, **({"ddddocr": ddddocr} if ddddocr else {})},
                     held, args.latency_per_scheme)
    print("p50 ms per image, one core (ONNX Runtime on one thread, bytes in, answer out, "
          f"{args.latency_per_scheme} images per scheme, engines interleaved): "
          + ", ".join(f"{k} {v:.1f}" for k, v in latency.items()))
    for t in (50, 70, 80, 90):
        sel = [ok for c, ok in pairs_ft if c * 100 >= t]
        print(f"threshold {t}%: returns {len(sel) / len(pairs_ft):.3f} of readings, "
              f"{(sum(sel) / len(sel)) if sel else float('nan'):.3f} of them right")
    report.update({"held_out": results, "n": n_held, "p50_ms": latency,
                   "model_bytes": os.path.getsize(os.path.join(MODELS_DIR, MODEL_FILE))})
    with open(args.json, "w") as fh:
        json.dump(report, fh, indent=1)


if __name__ == "__main__":
    main()
