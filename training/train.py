"""Train the CRNN for a wall-clock budget.

    python -m training.train --data training/out/data --budget-min 95

With --data, batches come from the shards training/gen.py wrote (shuffled each epoch
with a seeded generator, then augmented on the fly: a random affine warp, sometimes
inverted, sometimes noisy), and training uses every core. Without it, one DataLoader
worker process generates an endless stream (seeded from config.SEEDS["train"]) and the
main process trains with one thread, which on a small CPU starves the model.

The learning rate follows a warm-up + cosine schedule over the *time* budget, so the
run always ends annealed; the checkpoint is written every few minutes and at the end
(training/out/model.pt), the log to stdout.
"""

from __future__ import annotations

import argparse
import glob
import os
import random
import time
from collections.abc import Iterator

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, IterableDataset

from capd.modules.train import warmup_cosine
from capd.solving.ocr.capd_engine import preprocess
from training import config
from training.model import CHARSET, CRNN
from training.synth import make_sample, sample_style, usable_fonts

CHAR_INDEX = {c: i + 1 for i, c in enumerate(CHARSET)}


def encode(label: str) -> list[int]:
    return [CHAR_INDEX[c] for c in label]


class SynthStream(IterableDataset):
    """Endless batches: (images (B,1,32,128), targets, target lengths)."""

    def __init__(self, seed: int, batch: int, split: str = "train") -> None:
        self.seed, self.batch, self.split = seed, batch, split

    def __iter__(self):  # type: ignore[override]
        info = torch.utils.data.get_worker_info()
        wid = info.id if info else 0
        rng = random.Random(self.seed * 1000 + wid)
        fonts = usable_fonts(config.fonts_for(self.split))
        while True:
            xs, ys, lens = [], [], []
            for _ in range(self.batch):
                im, label, _ = make_sample(rng, sample_style(rng), fonts)
                xs.append(preprocess(im))
                ids = encode(label)
                ys.extend(ids)
                lens.append(len(ids))
            yield (torch.from_numpy(np.stack(xs)), torch.tensor(ys, dtype=torch.long),
                   torch.tensor(lens, dtype=torch.long))


class ShardData:
    """Every shard in memory as uint8; epochs of shuffled, augmented batches."""

    def __init__(self, directory: str, batch: int, seed: int) -> None:
        paths = sorted(glob.glob(os.path.join(directory, "shard_*.npz")))
        if not paths:
            raise SystemExit(f"no shards in {directory}: run python -m training.gen first")
        greys, self.targets = [], []
        for p in paths:
            with np.load(p) as z:
                greys.append(z["grey"])
                self.targets += [encode(str(lab)) for lab in z["label"]]
        self.grey = torch.from_numpy(np.concatenate(greys))
        self.batch = batch
        self.gen = torch.Generator().manual_seed(seed)
        print(f"data: {len(self.targets)} images from {len(paths)} shards", flush=True)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        while True:
            order = torch.randperm(len(self.targets), generator=self.gen)
            for i in range(0, len(order) - self.batch + 1, self.batch):
                idx = order[i:i + self.batch]
                ys = [self.targets[j] for j in idx.tolist()]
                yield (augment(self.grey[idx], self.gen),
                       torch.tensor([c for y in ys for c in y], dtype=torch.long),
                       torch.tensor([len(y) for y in ys], dtype=torch.long))


def augment(grey: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """uint8 (B, 32, 128) -> standardised float (B, 1, 32, 128), with a random affine
    warp (70%), inversion (10%) and Gaussian noise (30%) per image."""
    x = grey.float().unsqueeze(1) / 255.0
    b = x.shape[0]

    def u(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, generator=gen)

    on = (torch.rand(b, generator=gen) < 0.7).float()
    theta = torch.zeros(b, 2, 3)
    # output -> input coordinates: a scale above 1 shrinks the text; keep zoom-in and
    # shifts small so no character is pushed out of the frame
    theta[:, 0, 0] = 1 + on * u(-0.03, 0.12)
    theta[:, 0, 1] = on * u(-0.12, 0.12)
    theta[:, 0, 2] = on * u(-0.03, 0.03)
    theta[:, 1, 0] = on * u(-0.03, 0.03)
    theta[:, 1, 1] = 1 + on * u(-0.04, 0.12)
    theta[:, 1, 2] = on * u(-0.06, 0.06)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    inv = (torch.rand(b, 1, 1, 1, generator=gen) < 0.1).float()
    x = inv * (1 - x) + (1 - inv) * x
    mean = x.mean(dim=(2, 3), keepdim=True)
    std = x.std(dim=(2, 3), keepdim=True).clamp_min(0.05)
    x = (x - mean) / std
    noisy = (torch.rand(b, 1, 1, 1, generator=gen) < 0.3).float()
    sigma = u(0.0, 0.35).view(b, 1, 1, 1)
    return x + noisy * sigma * torch.randn(x.shape, generator=gen)


def greedy(logits: torch.Tensor) -> list[str]:
    best = logits.argmax(2).T.tolist()  # N, T
    out = []
    for row in best:
        s, prev = [], 0
        for k in row:
            if k != prev and k != 0:
                s.append(CHARSET[k - 1])
            prev = k
        out.append("".join(s))
    return out


def val_set(n: int = 384) -> tuple[torch.Tensor, list[str]]:
    """A fixed monitoring set from calibration fonts (never trained on)."""
    rng = random.Random(config.SEEDS["calib"] + 5)
    fonts = usable_fonts(config.fonts_for("calib"))
    xs, labels = [], []
    for _ in range(n):
        im, label, _ = make_sample(rng, sample_style(rng), fonts)
        xs.append(preprocess(im))
        labels.append(label)
    return torch.from_numpy(np.stack(xs)), labels


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget-min", type=float, default=config.DEFAULT_BUDGET_MIN)
    ap.add_argument("--batch", type=int, default=config.BATCH)
    ap.add_argument("--lr", type=float, default=config.LR)
    ap.add_argument("--out", default=config.CHECKPOINT)
    ap.add_argument("--val-every-min", type=float, default=4.0)
    ap.add_argument("--resume", action="store_true",
                    help="continue from --out (a second, shorter cosine cycle: pass a lower "
                         "--lr); the sample stream then starts from --seed-offset")
    ap.add_argument("--seed-offset", type=int, default=0)
    ap.add_argument("--data", default="",
                    help="train on the shards training/gen.py wrote in this folder")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch threads (default: every core with --data, else 1)")
    args = ap.parse_args()

    torch.set_num_threads(args.threads or ((os.cpu_count() or 1) if args.data else 1))
    torch.manual_seed(config.SEEDS["torch"])
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    budget = args.budget_min * 60.0
    start = time.monotonic()

    model = CRNN()
    step0 = seen0 = 0
    prior_s = 0.0
    if args.resume:
        ck = torch.load(args.out, map_location="cpu")
        model.load_state_dict(ck["model"])
        step0, seen0 = ck["step"], ck["seen"]
        prior_s = ck.get("elapsed_s", 0.0)
        print(f"resumed from {args.out} at step {step0}", flush=True)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=config.WEIGHT_DECAY)
    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    loader: ShardData | DataLoader
    if args.data:
        loader = ShardData(args.data, args.batch, config.SEEDS["torch"] + args.seed_offset)
    else:
        stream = SynthStream(config.SEEDS["train"] + args.seed_offset, args.batch)
        loader = DataLoader(stream, batch_size=None,
                            num_workers=1, prefetch_factor=6, persistent_workers=True)
    vx, vlabels = val_set()
    print(f"params {sum(p.numel() for p in model.parameters())} budget {budget:.0f}s",
          flush=True)

    def save(step: int, seen: int) -> None:
        torch.save({"model": model.state_dict(), "step": step, "seen": seen,
                    "charset": CHARSET, "elapsed_s": prior_s + time.monotonic() - start}, args.out)

    def validate() -> float:
        model.eval()
        with torch.no_grad():
            preds = []
            for i in range(0, len(vx), 128):
                preds += greedy(model(vx[i:i + 128]))
        model.train()
        return sum(p == t for p, t in zip(preds, vlabels, strict=True)) / len(vlabels)

    step, seen, ema = step0, seen0, None
    last_val = last_save = time.monotonic()
    warm = 0.03
    for xb, yb, lb in loader:
        frac = (time.monotonic() - start) / budget
        if frac >= 1.0:
            break
        lr = args.lr * warmup_cosine(frac, warm, 0.02)
        for g in opt.param_groups:
            g["lr"] = lr
        out = model(xb).log_softmax(2)
        t = torch.full((xb.shape[0],), out.shape[0], dtype=torch.long)
        loss = ctc(out, yb, t, lb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        step += 1
        seen += xb.shape[0]
        ema = loss.item() if ema is None else 0.98 * ema + 0.02 * loss.item()
        now = time.monotonic()
        if step % 50 == 0:
            print(f"step {step} seen {seen} t {now - start:.0f}s lr {lr:.2e} loss {ema:.3f}",
                  flush=True)
        if now - last_val > args.val_every_min * 60:
            print(f"VAL step {step} seen {seen} t {now - start:.0f}s exact {validate():.3f}",
                  flush=True)
            last_val = now
        if now - last_save > 300:
            save(step, seen)
            last_save = now
    save(step, seen)
    print(f"DONE step {step} seen {seen} t {time.monotonic() - start:.0f}s "
          f"val_exact {validate():.3f}", flush=True)


if __name__ == "__main__":
    main()
