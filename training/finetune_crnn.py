"""Fine-tune capd's small CRNN on real captchas plus its synthetic styles: the
``capd-web`` engine, as cheap as ``capd`` and surer on real websites' schemes.

    nice -n 19 python -m training.finetune_crnn --budget-min 65 [--resume]
    python -m training.export --ckpt training/out/crnn_web.pt \
        --out capd/solving/ocr/models/capd_web.onnx --meta capd/solving/ocr/models/capd_web.json

Start: the shipped ``capd_crnn.onnx`` (--init shipped; its weights are read back from
the ONNX file, where the export folded every BatchNorm into its convolution, so each
BatchNorm starts as the identity plus the folded bias and keeps its statistics frozen)
or a checkpoint of an earlier run (--init FILE).

Data: the fit part of every scheme's train split (training/datasets.py: the held-out 20%
and the calibration slice are never trained on) through the engine's own preprocessing
(capd_engine.grey_input: 32 x 128 grey), and a pool of synthetic captchas of every style
in the training fonts (--synth, drawn once on every core at start). Each batch is half
synthetic (--synth-share), half real with schemes drawn by --scheme-weights; the shared
batched augmentation of training/train.py (affine warp, inversion, noise). The scheme
whose labels lose the drawn case (datasets.CASE_INSENSITIVE) trains with CTC over
case-folded classes, as training/finetune.py does.

Schedule: AdamW, warm-up then cosine over the wall-clock budget (time spent survives
--resume); a checkpoint every --save-min minutes; every --val-min minutes the log shows
the exact, case-insensitive accuracy on a fixed sample of each scheme's held-out split
and on the synthetic monitoring set of training/train.py (calibration fonts), for
monitoring only.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

from capd.modules.train import warmup_cosine  # noqa: E402
from capd.solving.ocr.capd_engine import grey_input, standardise  # noqa: E402
from training import config, datasets  # noqa: E402
from training.finetune import encode as encode_label  # noqa: E402
from training.finetune import fmt_acc, fold_log_probs, parse_weights  # noqa: E402
from training.model import CHARSET, CRNN  # noqa: E402
from training.train import augment, greedy, val_set  # noqa: E402

SEED = 20261128
CHECKPOINT = "training/out/crnn_web.pt"


def from_onnx(path: str) -> CRNN:
    """The CRNN with the weights of an exported ONNX file (BatchNorm folded there: each
    BatchNorm here becomes the identity plus the folded bias)."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load(path).graph
    init = {i.name: numpy_helper.to_array(i).copy() for i in graph.initializer}
    model = CRNN()
    convs = [m for m in model.cnn if isinstance(m, nn.Conv2d)]
    norms = [m for m in model.cnn if isinstance(m, nn.BatchNorm2d)]
    conv_nodes = [n for n in graph.node if n.op_type == "Conv"]
    if len(conv_nodes) != len(convs):
        raise SystemExit(f"{path}: {len(conv_nodes)} convolutions, the CRNN has {len(convs)}")
    with torch.no_grad():
        for node, conv, norm in zip(conv_nodes, convs, norms, strict=True):
            conv.weight.copy_(torch.from_numpy(init[node.input[1]]))
            norm.weight.fill_(1.0)
            norm.bias.copy_(torch.from_numpy(init[node.input[2]]))
            norm.running_mean.zero_()
            norm.running_var.fill_(1.0 - norm.eps)
        lstm = next(n for n in graph.node if n.op_type == "LSTM")
        w, r, b = (torch.from_numpy(init[name]) for name in lstm.input[1:4])
        h = model.rnn.hidden_size

        def gates(t: torch.Tensor) -> torch.Tensor:  # ONNX i, o, f, c -> PyTorch i, f, g, o
            i, o, f, c = t.split(h, dim=0)
            return torch.cat([i, f, c, o])

        for d, suffix in enumerate(("", "_reverse")):
            getattr(model.rnn, f"weight_ih_l0{suffix}").copy_(gates(w[d]))
            getattr(model.rnn, f"weight_hh_l0{suffix}").copy_(gates(r[d]))
            getattr(model.rnn, f"bias_ih_l0{suffix}").copy_(gates(b[d][:4 * h]))
            getattr(model.rnn, f"bias_hh_l0{suffix}").copy_(gates(b[d][4 * h:]))
        matmul = next(n for n in graph.node if n.op_type == "MatMul")
        add = next(n for n in graph.node if n.op_type == "Add")
        model.fc.weight.copy_(torch.from_numpy(init[matmul.input[1]]).T)
        model.fc.bias.copy_(torch.from_numpy(init[next(x for x in add.input if x in init)]))
    return model


def freeze_norms(model: CRNN) -> None:
    """BatchNorm statistics stay as loaded (train mode would replace them by batch ones)."""
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.eval()


def load_greys(rows: list[tuple[str, str]]) -> list[tuple[np.ndarray, str]]:
    out = []
    for path, label in rows:
        with Image.open(path) as im:
            im.load()
            out.append((grey_input(im), label))
    return out


def _synth_part(args: tuple[int, int]) -> list[tuple[np.ndarray, str]]:
    from training.synth import make_sample, sample_style, usable_fonts

    seed, n = args
    rng = random.Random(seed)
    fonts = usable_fonts(config.fonts_for("train"))
    out = []
    for _ in range(n):
        im, label, _ = make_sample(rng, sample_style(rng), fonts)
        out.append((grey_input(im), label))
    return out


def synth_pool(n: int, seed: int, procs: int) -> list[tuple[np.ndarray, str]]:
    """n synthetic captchas of every style (train fonts), drawn on ``procs`` processes."""
    parts = [(seed * 100 + k, n // procs + (k < n % procs)) for k in range(procs)]
    with multiprocessing.get_context("fork").Pool(procs) as pool:
        return [item for part in pool.map(_synth_part, parts) for item in part]


def evaluate(model: CRNN, sample: dict[str, list[tuple[np.ndarray, str]]],
             synth: tuple[torch.Tensor, list[str]]) -> dict[str, float]:
    model.eval()
    acc = {}
    with torch.no_grad():
        for scheme, items in sample.items():
            x = torch.from_numpy(standardise(np.stack([g for g, _ in items])))
            preds = greedy(model(x))
            acc[scheme] = sum(p.lower() == lab.lower()
                              for p, (_, lab) in zip(preds, items, strict=True)) / len(items)
        vx, vlabels = synth
        preds = greedy(model(vx))
        acc["synth"] = sum(p == t for p, t in zip(preds, vlabels, strict=True)) / len(vlabels)
    model.train()
    freeze_norms(model)
    return acc


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget-min", type=float, default=60.0)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=1e-2)
    ap.add_argument("--synth", type=int, default=24000)
    ap.add_argument("--synth-share", type=float, default=0.5)
    ap.add_argument("--scheme-weights", default="")
    ap.add_argument("--val-per-scheme", type=int, default=100)
    ap.add_argument("--val-min", type=float, default=5.0)
    ap.add_argument("--save-min", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--init", default="shipped")
    ap.add_argument("--seed", type=int, default=SEED, help="synthetic pool and batch order")
    ap.add_argument("--out", default=CHECKPOINT)
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    t0 = time.monotonic()
    fit: dict[str, list[tuple[np.ndarray, str]]] = {}
    val: dict[str, list[tuple[np.ndarray, str]]] = {}
    for scheme in datasets.SCHEMES:
        fit_rows, _calib = datasets.finetune_split(scheme)
        _, held = datasets.split(scheme)
        fit[scheme] = load_greys(fit_rows)
        val[scheme] = load_greys(held[:args.val_per_scheme])
    synth = synth_pool(args.synth, args.seed, max(1, args.threads)) if args.synth else []
    synth_val = val_set()
    print(f"data: {sum(len(v) for v in fit.values())} real, {len(synth)} synthetic, "
          f"{time.monotonic() - t0:.0f}s", flush=True)

    if args.init == "shipped":
        model = from_onnx(config.ONNX_OUT)
    else:
        model = CRNN()
        model.load_state_dict(torch.load(args.init, map_location="cpu")["model"])
    model.train()
    freeze_norms(model)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    rng = random.Random(args.seed)
    gen = torch.Generator().manual_seed(args.seed)
    step, seen, prior_s = 0, 0, 0.0
    if args.resume and os.path.exists(args.out):
        ck = torch.load(args.out, map_location="cpu", weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        step, seen, prior_s = ck["step"], ck["seen"], ck["elapsed_s"]
        rng.setstate(ck["py_rng"])
        gen.set_state(ck["torch_gen"])
        print(f"resumed at step {step}, {prior_s / 60:.1f} min done", flush=True)
    else:
        print(f"start: {fmt_acc(evaluate(model, val, synth_val))}", flush=True)

    weights = parse_weights(args.scheme_weights)
    schemes = list(datasets.SCHEMES)
    budget = args.budget_min * 60.0
    start = time.monotonic()

    def elapsed() -> float:
        return prior_s + time.monotonic() - start

    def save() -> None:
        tmp = args.out + ".tmp"
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                    "seen": seen, "elapsed_s": elapsed(), "py_rng": rng.getstate(),
                    "torch_gen": gen.get_state(), "charset": CHARSET}, tmp)
        os.replace(tmp, args.out)

    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    n_synth = round(args.batch * args.synth_share) if synth else 0
    warm, ema = 0.03, None
    last_val = last_save = time.monotonic()
    while (frac := elapsed() / budget) < 1.0:
        lr = args.lr * warmup_cosine(frac, warm, 0.02)
        for g in opt.param_groups:
            g["lr"] = lr
        items = [synth[rng.randrange(len(synth))] for _ in range(n_synth)]
        folded_flags = [False] * n_synth
        for _ in range(args.batch - n_synth):
            scheme = rng.choices(schemes, [weights[k] for k in schemes])[0]
            pool = fit[scheme]
            items.append(pool[rng.randrange(len(pool))])
            folded_flags.append(scheme in datasets.CASE_INSENSITIVE)
        x = augment(torch.from_numpy(np.stack([g for g, _ in items])), gen)
        logp = model(x).log_softmax(2)
        loss = torch.zeros(())
        for folded in (False, True):
            idx = [i for i, f in enumerate(folded_flags) if f == folded]
            if not idx:
                continue
            part = logp[:, idx]
            if folded:
                part = fold_log_probs(part)
            targets = [encode_label(items[i][1], folded) for i in idx]
            loss = loss + ctc(
                part, torch.tensor([c for t in targets for c in t], dtype=torch.long),
                torch.full((len(idx),), logp.shape[0], dtype=torch.long),
                torch.tensor([len(t) for t in targets], dtype=torch.long),
            ) * (len(idx) / len(items))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        step += 1
        seen += len(items)
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        now = time.monotonic()
        if step % 50 == 0:
            print(f"step {step} seen {seen} t {elapsed():.0f}s lr {lr:.2e} loss {ema:.3f} "
                  f"({seen / max(1.0, elapsed()):.0f} img/s)", flush=True)
        if now - last_save > args.save_min * 60:
            save()
            last_save = now
        if now - last_val > args.val_min * 60:
            print(f"VAL step {step} t {elapsed():.0f}s {fmt_acc(evaluate(model, val, synth_val))}",
                  flush=True)
            last_val = time.monotonic()
    save()
    print(f"DONE step {step} seen {seen} t {elapsed():.0f}s "
          f"{fmt_acc(evaluate(model, val, synth_val))}", flush=True)


if __name__ == "__main__":
    main()
