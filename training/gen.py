"""Pre-generate the training set as shards of network-ready grey pixels.

    python -m training.gen --images 360000 [--procs 2]

Shard k (10,000 images) is drawn from random.Random(SEEDS["train"] * 1000 + k), so the
set is the same whatever the number of processes. Each shard is one .npz under
training/out/data/: `grey` (n, 32, 128) uint8, exactly capd_engine.grey_input's output,
and `label` (n,) strings. Generation is the slow part of training on a CPU (about 6 ms
per image against 4 ms for a training step of one image on one core), so it is done
once, on every core, and training then reads the shards for several epochs with cheap
batched augmentation (train.py --data).
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import random
import time

import numpy as np

from capd.solving.ocr.capd_engine import grey_input
from training import config
from training.synth import make_sample, sample_style, usable_fonts

SHARD = 10_000
DATA_DIR = "training/out/data"


def shard_path(out: str, k: int) -> str:
    return os.path.join(out, f"shard_{k:04d}.npz")


def make_shard(args: tuple[int, str]) -> str:
    k, out = args
    path = shard_path(out, k)
    if os.path.exists(path):
        return path
    rng = random.Random(config.SEEDS["train"] * 1000 + k)
    fonts = usable_fonts(config.fonts_for("train"))
    grey = np.empty((SHARD, config.HEIGHT, config.WIDTH), dtype=np.uint8)
    labels = []
    for i in range(SHARD):
        im, label, _ = make_sample(rng, sample_style(rng), fonts)
        grey[i] = grey_input(im)
        labels.append(label)
    tmp = path + ".tmp.npz"
    np.savez(tmp, grey=grey, label=np.array(labels))
    os.replace(tmp, path)
    return path


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=360_000)
    ap.add_argument("--procs", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--out", default=DATA_DIR)
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    n = -(-args.images // SHARD)
    start = time.monotonic()
    with multiprocessing.Pool(args.procs) as pool:
        for i, path in enumerate(pool.imap(make_shard, [(k, args.out) for k in range(n)])):
            print(f"{i + 1}/{n} {path} t {time.monotonic() - start:.0f}s", flush=True)


if __name__ == "__main__":
    main()
