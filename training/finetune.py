"""Fine-tune ddddocr's default network on real captchas, with capd's alphabet.

    nice -n 19 python -m training.finetune --budget-min 60 [--resume]

Start: ddddocr's network and weights (capd/modules/net.py, dequantised from its
ONNX file) with its 8210-class output layer replaced by one over the CTC blank + capd's
66 symbols (training.model.CHARSET: digits, a-z, A-Z, + - × =, case kept). Every row
of the new layer is copied from the old layer's row for the same character (all 66
exist in ddddocr's charset), so step 0 reads like ddddocr restricted to capd's alphabet.

Data: the fit part of each scheme's train split (training/datasets.py: the fixed 80/20
split, minus the last 10% of the train split kept for calibration; the held-out 20% is
never trained on), read through the engine's own preprocessing
(finetuned_engine.grey64), plus a small pool of synthetic captchas from training/synth.py
for variety (--synth-share of the batches). A batch holds one scheme's images, each at
its own width (aspect ratio kept, jittered x0.9-1.1), right-padded with its edge column;
the CTC input length of each image is its own frame count. Light augmentation: a small
affine warp, brightness / contrast jitter, sometimes blur or noise.

What trains (--freeze): on a 2-core CPU a full step costs ~2.5 CPU-seconds per 32
images, of which the stem and the first two convolution stages (the "front", over half
of the network's arithmetic, at 32 x W/2 and 16 x W/4 resolution) take ~60%. The default,
--freeze front, keeps the front at ddddocr's weights and runs it once per image at
start (half the images augmented first, with a fixed seed); training then updates the
last convolution stage, the BiLSTM and the output layer on the cached front outputs
(width jitter applied to the cached features), ~1 CPU-second per 32 images.
--freeze none trains every layer on freshly augmented pixels every step.

Case: labels of case-sensitive schemes are trained as they are. For a scheme whose
labels do not carry the drawn case (datasets.CASE_INSENSITIVE), the CTC loss runs over
case-folded classes: each lower-case class's probability is summed with its upper-case
partner's, so either case drawn in the image satisfies the lower-case label.

Schedule: AdamW, warm-up then cosine over the wall-clock budget (--budget-min); the
time already spent survives --resume, so a resumed run continues the same schedule.
Every --save-min minutes a checkpoint (model, optimiser, step, elapsed time, every RNG
state) goes to --out; --resume restarts from it. Every --val-min minutes the exact
(case-insensitive) accuracy per scheme on a fixed sample of the held-out split is
logged (monitoring only; nothing is selected on it).

Elsewhere (a GPU machine without ../shared/datasets or the training fonts):
--write-pack FILE decodes every image the run would read (fit split, monitor sample,
synthetic and imitation pools) into one .npz of plain arrays and stops; --pack FILE
trains from it. --device cuda moves the network, --workers N draws and augments the
batches in N DataLoader processes (each seeded on its own, so a resumed run continues
the schedule but not the exact sample stream), and --weights-out keeps the weights alone
in float16 (10 MB), for --init or export_finetuned --checkpoint.

--crop reads every image cut to its text band first (finetuned_engine.text_band: small
text on a large canvas reaches the network larger); the checkpoint and the export record
it, and the engine reads the way its model was trained. Tried on a GPU and not shipped
(training/README.md, "A fifth stage").
"""

from __future__ import annotations

import argparse
import datetime
import lzma
import os
import random
import time

# on a shared CPU, idle OpenMP threads should sleep rather than spin (set before torch)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from PIL import Image  # noqa: E402
from torch import nn  # noqa: E402

from capd.modules.net import FRONT_BLOCKS, DdddNet, pretrained  # noqa: E402
from capd.modules.train import augment, feature_batch, pixel_batch, warmup_cosine  # noqa: E402
from capd.solving.ocr.finetuned_engine import GREY_MODES, grey64  # noqa: E402
from training import datasets, imitate  # noqa: E402
from training.model import CHARSET  # noqa: E402

SEED = 20261127
CHECKPOINT = "training/out/finetune.pt"
N_CLASSES = len(CHARSET) + 1
CHAR_INDEX = {c: i + 1 for i, c in enumerate(CHARSET)}
# case-folded class space: blank, every non-upper-case symbol; an upper-case letter
# maps onto its lower-case partner's folded class
_FOLD_KEEP = [0] + [i + 1 for i, c in enumerate(CHARSET) if not c.isupper()]
FOLD_INDEX = {CHARSET[k - 1]: j for j, k in enumerate(_FOLD_KEEP) if k}
_FOLD_UPPER = [(CHARSET.index(c.upper()) + 1, FOLD_INDEX[c]) for c in CHARSET
               if c.islower() and c.upper() in CHARSET]


def capd_head(net: DdddNet) -> DdddNet:
    """Replace the 8210-class output layer by one over capd's charset, each row copied
    from ddddocr's row for the same character (row 0: the CTC blank)."""
    from ddddocr.charsets import CHARSET_OLD

    old = net.head
    new = nn.Linear(old.in_features, N_CLASSES)
    rows = [0] + [CHARSET_OLD.index(c) for c in CHARSET]
    with torch.no_grad():
        new.weight.copy_(old.weight[rows])
        new.bias.copy_(old.bias[rows])
    net.head = new
    return net


def build_model(init: str = "ddddocr") -> DdddNet:
    """The network training starts from: ``ddddocr`` (its weights, capd's head),
    ``shipped`` (the shipped ``finetuned`` engine's int8 weights, dequantised), or the
    path of an earlier run's checkpoint (its weights only: a new optimiser and schedule,
    e.g. a second stage with every layer training)."""
    if init == "shipped":
        from capd.modules.train import base_network, general_base

        model, charset, label = general_base()
        return base_network(model, charset, list(CHARSET), label).train()
    net = capd_head(pretrained())
    if init != "ddddocr":
        ck = torch.load(init, map_location="cpu", weights_only=False)
        if ck.get("charset") != CHARSET:
            raise SystemExit(f"--init {init}: its charset differs from capd's")
        net.load_state_dict(ck["model"])
    return net.train()


def parse_weights(text: str) -> dict[str, float]:
    """"scheme=3,other=1.5" -> per-scheme sampling weights (default 1 each)."""
    weights = {scheme: 1.0 for scheme in datasets.SCHEMES}
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if name not in weights:
            raise SystemExit(f"--scheme-weights: unknown scheme {name!r}")
        weights[name] = float(value)
    return weights


def load_images(rows: list[tuple[str, str]], grey: str = "luminance", crop: bool = False
                ) -> list[tuple[np.ndarray, str]]:
    out = []
    for path, label in rows:
        with Image.open(path) as im:
            im.load()
            out.append((grey64(im, grey=grey, crop=crop), label))
    return out


def synth_pool(n: int, seed: int, grey: str = "luminance", crop: bool = False
               ) -> list[tuple[np.ndarray, str]]:
    """n synthetic captchas (train fonts) at their native size, as grey64 arrays."""
    from training import config
    from training.synth import make_sample, sample_style, usable_fonts

    rng = random.Random(seed)
    fonts = usable_fonts(config.fonts_for("train"))
    out = []
    for _ in range(n):
        im, label, _ = make_sample(rng, sample_style(rng), fonts)
        out.append((grey64(im, grey=grey, crop=crop), label))
    return out


def imitation_pools(n: int, seed: int, kinds: list[str], grey: str = "luminance",
                    crop: bool = False) -> dict[str, list[tuple[np.ndarray, str]]]:
    """n captchas from each of training/imitate.py's generators named in ``kinds`` (train
    fonts), as grey64 arrays, keyed by the generator's name."""
    from training import config
    from training.synth import usable_fonts

    rng = random.Random(seed)
    fonts = usable_fonts(config.fonts_for("train"))
    pools: dict[str, list[tuple[np.ndarray, str]]] = {}
    for name, make in imitate.GENERATORS.items():
        if name not in kinds:
            continue
        pools[name] = []
        for _ in range(n):
            im, label = make(rng, fonts)
            pools[name].append((grey64(im, grey=grey, crop=crop), label))
    return pools


def encode(label: str, folded: bool) -> list[int]:
    if folded:
        return [FOLD_INDEX[c.lower() if c.isupper() else c] for c in label]
    return [CHAR_INDEX[c] for c in label]


def fold_log_probs(logp: torch.Tensor) -> torch.Tensor:
    """(T, N, C) log-probabilities -> (T, N, folded C): upper-case mass added to the
    lower-case partner."""
    upper_of = {low: up for up, low in _FOLD_UPPER}
    cols = []
    for j, k in enumerate(_FOLD_KEEP):
        col = logp[:, :, k]
        if j in upper_of:
            col = torch.logaddexp(col, logp[:, :, upper_of[j]])
        cols.append(col)
    return torch.stack(cols, dim=2)


def cache_front(model: DdddNet, items: list[tuple[np.ndarray, str]], rng: random.Random,
                gen: torch.Generator, aug_share: float) -> list[tuple[torch.Tensor, str]]:
    """Run the frozen front once per image (a share of them lightly augmented first):
    (front output as float16 (48, 16, W/4), label)."""
    out = []
    with torch.no_grad():
        for grey, label in items:
            x = torch.tensor(grey, dtype=torch.float32).div(255.0)[None, None]
            if rng.random() < aug_share:
                x = augment(x, gen)
            out.append((model.front(x)[0].half(), label))
    return out


def greedy(frames: torch.Tensor) -> str:
    """Greedy CTC of one image's (T, C) logits over the full charset."""
    out, prev = [], 0
    for k in frames.argmax(-1).tolist():
        if k != prev and k != 0:
            out.append(CHARSET[k - 1])
        prev = k
    return "".join(out)


def evaluate(model: nn.Module, sample: dict[str, list[tuple[np.ndarray, str]]],
             device: str = "cpu") -> dict[str, float]:
    """Exact, case-insensitive accuracy per scheme (greedy CTC, one image at a time)."""
    model.eval()
    acc = {}
    with torch.no_grad():
        for scheme, items in sample.items():
            right = 0
            for grey, label in items:
                x = torch.tensor(grey, dtype=torch.float32, device=device).div(255.0)
                right += greedy(model(x[None, None])[:, 0].cpu()).lower() == label.lower()
            acc[scheme] = right / max(1, len(items))
    model.train()
    return acc


def fmt_acc(acc: dict[str, float]) -> str:
    mean = sum(acc.values()) / max(1, len(acc))
    return f"mean {mean:.3f} | " + " ".join(f"{k}={v:.3f}" for k, v in acc.items())


# -- a data pack: every image training reads, decoded, in one file ----------------------
def write_pack(path: str, groups: dict[str, list[tuple[np.ndarray, str]]],
               grey: str = "luminance", crop: bool = False) -> None:
    """Save decoded grey64 images and labels as one .npz (no pickled objects; each
    group's pixels one LZMA stream), so that training can run on a machine without
    ../shared/datasets or the fonts. ``groups`` maps "fit/<scheme>", "val/<scheme>",
    "synth" or "imitate/<generator>" to (image, label) pairs; ``grey`` names how they
    were made grey (finetuned_engine.GREY_MODES), ``crop`` whether small text was cut to
    its band."""
    arrays: dict[str, np.ndarray] = {"grey": np.array(grey), "crop": np.array(crop)}
    for key, items in groups.items():
        tag = key.replace("/", "__")
        raw = b"".join(np.ascontiguousarray(g).tobytes() for g, _ in items)
        arrays[f"{tag}__pixels"] = np.frombuffer(lzma.compress(raw), dtype=np.uint8)
        arrays[f"{tag}__widths"] = np.array([g.shape[1] for g, _ in items], dtype=np.int32)
        arrays[f"{tag}__labels"] = np.array([label for _, label in items], dtype=np.str_)
    np.savez(path, **arrays)


def read_pack(path: str) -> tuple[dict[str, list[tuple[np.ndarray, str]]], str, bool]:
    """The inverse of write_pack: (groups, grey mode, crop)."""
    out: dict[str, list[tuple[np.ndarray, str]]] = {}
    with np.load(path, allow_pickle=False) as pack:
        grey = str(pack["grey"]) if "grey" in pack.files else "luminance"
        crop = bool(pack["crop"]) if "crop" in pack.files else False
        tags = sorted({k.rsplit("__", 1)[0] for k in pack.files if "__" in k})
        for tag in tags:
            pixels = np.frombuffer(lzma.decompress(pack[f"{tag}__pixels"].tobytes()),
                                   dtype=np.uint8)
            widths = pack[f"{tag}__widths"]
            labels = pack[f"{tag}__labels"]
            items, at = [], 0
            for w, label in zip(widths.tolist(), labels.tolist(), strict=True):
                items.append((pixels[at:at + 64 * w].reshape(64, w), str(label)))
                at += 64 * w
            out[tag.replace("__", "/")] = items
    return out, grey, crop


def pick_pool(rng: random.Random, pools: dict[str, list], weights: dict[str, float],
              synth_share: float, imitate_share: float) -> str:
    """Which pool the next batch comes from: "synth" a share of the time, then an
    imitation pool a share of the time, else a scheme by its weight."""
    imitation = sorted(k for k in pools if k.startswith("imitate/"))
    schemes = list(datasets.SCHEMES)
    if "synth" in pools and rng.random() < synth_share:
        return "synth"
    if imitation and rng.random() < imitate_share:
        return rng.choice(imitation)
    return rng.choices(schemes, [weights[k] for k in schemes])[0]


def draw_batch(rng: random.Random, gen: torch.Generator, pools: dict[str, list],
               weights: dict[str, float], batch: int, synth_share: float,
               imitate_share: float) -> tuple[str, torch.Tensor, list[int], list[str]]:
    """One augmented training batch: (pool name, (N, 1, 64, W) pixels, frame counts,
    labels). ``pools`` holds the schemes' fit images, optionally "synth" and
    "imitate/<generator>" pools."""
    name = pick_pool(rng, pools, weights, synth_share, imitate_share)
    pool = pools[name]
    items = [pool[rng.randrange(len(pool))] for _ in range(batch)]
    x, frames = pixel_batch([grey for grey, _ in items], rng)
    return name, augment(x, gen), frames, [label for _, label in items]


class BatchStream(torch.utils.data.IterableDataset):
    """draw_batch forever, in DataLoader worker processes (each with its own seed), so
    that a GPU is not kept waiting on one CPU core's augmentation."""

    def __init__(self, pools: dict[str, list], weights: dict[str, float], batch: int,
                 synth_share: float, imitate_share: float, seed: int) -> None:
        self.args = (pools, weights, batch, synth_share, imitate_share)
        self.seed = seed

    def __iter__(self):  # type: ignore[no-untyped-def]
        info = torch.utils.data.get_worker_info()
        wid = info.id if info is not None else 0
        torch.set_num_threads(1)
        rng = random.Random(self.seed * 131 + wid)
        gen = torch.Generator().manual_seed(self.seed * 131 + wid)
        while True:
            yield draw_batch(rng, gen, *self.args)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--budget-min", type=float, default=60.0,
                    help="wall-clock training budget, counted across resumes")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--lr", type=float, default=4e-4)
    ap.add_argument("--weight-decay", type=float, default=1e-4)
    ap.add_argument("--synth", type=int, default=3000, help="synthetic pool size (0: none)")
    ap.add_argument("--synth-share", type=float, default=0.12)
    ap.add_argument("--imitate", type=int, default=0,
                    help="captchas per training/imitate.py generator (0: none)")
    ap.add_argument("--imitate-kinds", default=",".join(sorted(imitate.GENERATORS)),
                    help="which training/imitate.py generators to draw from")
    ap.add_argument("--imitate-share", type=float, default=0.2,
                    help="share of the batches drawn from the imitation pools")
    ap.add_argument("--val-per-scheme", type=int, default=60)
    ap.add_argument("--val-min", type=float, default=6.0)
    ap.add_argument("--save-min", type=float, default=4.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--freeze", choices=("front", "none"), default="front",
                    help="front: keep the stem and the first two stages frozen and run "
                         "them once per image (cached, ~2.5x cheaper steps); none: train "
                         "every layer on freshly augmented pixels")
    ap.add_argument("--front-lr-scale", type=float, default=1.0,
                    help="with --freeze none: the front's learning rate as a share of --lr")
    ap.add_argument("--cache-aug", type=float, default=0.5,
                    help="with --freeze front: share of images augmented before caching")
    ap.add_argument("--init", default="ddddocr",
                    help="start from 'ddddocr' (its weights, capd's head), 'shipped' (the "
                         "shipped finetuned engine, dequantised) or an earlier run's "
                         "checkpoint file (weights only)")
    ap.add_argument("--scheme-weights", default="",
                    help="how often each scheme's batches come, e.g. "
                         "'web_securimage_grey=3,generic_colour_upper=3' (others 1)")
    ap.add_argument("--out", default=CHECKPOINT)
    ap.add_argument("--resume", action="store_true", help="continue from --out")
    ap.add_argument("--device", default="cpu", help="cpu, or cuda on a GPU machine")
    ap.add_argument("--workers", type=int, default=0,
                    help="processes drawing augmented batches (0: the training process "
                         "itself, the only way a --resume repeats the exact sample stream)")
    ap.add_argument("--write-pack", default="",
                    help="write every image this run would read (fit split, monitor "
                         "sample, synthetic and imitation pools) to this .npz and stop")
    ap.add_argument("--grey", choices=GREY_MODES, default="luminance",
                    help="how colour becomes grey (the export records it for the engine)")
    ap.add_argument("--crop", action="store_true",
                    help="cut small text on a large canvas to its band before scaling "
                         "(finetuned_engine.text_band; the export records it)")
    ap.add_argument("--pack", default="",
                    help="read the images from a --write-pack file instead of the datasets")
    ap.add_argument("--weights-out", default="",
                    help="at the end, also save the weights alone (float16, no optimiser "
                         "state) here: a valid --init and export_finetuned --checkpoint")
    ap.add_argument("--until", default="",
                    help="HH:MM UTC: end by then even if --budget-min is not spent")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    random.seed(SEED)
    np.random.seed(SEED % 2**32)
    torch.manual_seed(SEED)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    t_load = time.monotonic()

    kinds = [k for k in args.imitate_kinds.split(",") if k]
    if unknown := set(kinds) - set(imitate.GENERATORS):
        raise SystemExit(f"--imitate-kinds: unknown generators {sorted(unknown)}")
    fit: dict[str, list[tuple[np.ndarray, str]]] = {}
    val: dict[str, list[tuple[np.ndarray, str]]] = {}
    if args.pack:
        packed, packed_grey, packed_crop = read_pack(args.pack)
        if (packed_grey, packed_crop) != (args.grey, args.crop):
            raise SystemExit(f"--pack {args.pack} holds {packed_grey} images "
                             f"{'cut to their band' if packed_crop else 'uncut'}: give "
                             f"--grey {packed_grey}{' --crop' if packed_crop else ''}")
        for scheme in datasets.SCHEMES:
            fit[scheme] = packed[f"fit/{scheme}"]
            val[scheme] = packed[f"val/{scheme}"][:args.val_per_scheme]
        synth = packed.get("synth", [])[:args.synth]
        imitation = {k.split("/", 1)[1]: v[:args.imitate] for k, v in packed.items()
                     if k.startswith("imitate/") and args.imitate
                     and k.split("/", 1)[1] in kinds}
    else:
        for scheme in datasets.SCHEMES:
            fit_rows, _calib = datasets.finetune_split(scheme)
            _, held = datasets.split(scheme)
            fit[scheme] = load_images(fit_rows, args.grey, args.crop)
            val[scheme] = load_images(held[:args.val_per_scheme], args.grey, args.crop)
        synth = synth_pool(args.synth, SEED, args.grey, args.crop) if args.synth else []
        imitation = (imitation_pools(args.imitate, SEED + 2, kinds, args.grey, args.crop)
                     if args.imitate else {})
        if args.write_pack:
            write_pack(args.write_pack, {
                **{f"fit/{k}": v for k, v in fit.items()},
                **{f"val/{k}": v for k, v in val.items()}, "synth": synth,
                **{f"imitate/{k}": v for k, v in imitation.items()}}, args.grey, args.crop)
            print(f"wrote {args.write_pack} ({os.path.getsize(args.write_pack) / 1e6:.1f} MB)")
            return
    if imitation and args.freeze == "front":
        raise SystemExit("--imitate needs --freeze none (its pools are not front-cached)")
    print(f"data: {sum(len(v) for v in fit.values())} real images in {len(fit)} schemes, "
          f"{len(synth)} synthetic, {sum(len(v) for v in imitation.values())} imitations, "
          f"loaded in {time.monotonic() - t_load:.0f}s", flush=True)

    model = build_model(args.init).to(args.device)
    weights = parse_weights(args.scheme_weights)
    # the front (stem and first stages) may learn more slowly than the rest: it holds
    # ddddocr's general low-level features, which a fast rate would disturb
    front_ids = {id(p) for p in [*model.stem.parameters(),
                                 *model.body[:FRONT_BLOCKS].parameters()]}
    opt = torch.optim.AdamW(
        [{"params": [p for p in model.parameters() if id(p) in front_ids],
          "scale": args.front_lr_scale},
         {"params": [p for p in model.parameters() if id(p) not in front_ids], "scale": 1.0}],
        lr=args.lr, weight_decay=args.weight_decay)
    rng = random.Random(SEED)
    gen = torch.Generator().manual_seed(SEED)
    step, seen, prior_s = 0, 0, 0.0
    if args.resume and os.path.exists(args.out):
        ck = torch.load(args.out, map_location=args.device, weights_only=False)
        model.load_state_dict(ck["model"])
        opt.load_state_dict(ck["optimizer"])
        step, seen, prior_s = ck["step"], ck["seen"], ck["elapsed_s"]
        rng.setstate(ck["py_rng"])
        gen.set_state(ck["torch_gen"])
        torch.set_rng_state(ck["torch_rng"].cpu())
        print(f"resumed from {args.out} at step {step}, {prior_s / 60:.1f} min done",
              flush=True)
    else:
        print(f"start ({args.init} weights, capd head): held-out sample "
              f"{fmt_acc(evaluate(model, val, args.device))}", flush=True)

    cached: dict[str, list[tuple[torch.Tensor, str]]] = {}
    if args.freeze == "front":
        if args.device != "cpu" or args.workers:
            raise SystemExit("--freeze front runs on the CPU in one process: give "
                             "--freeze none with --device or --workers")
        t_cache = time.monotonic()
        for p in [*model.stem.parameters(), *model.body[:FRONT_BLOCKS].parameters()]:
            p.requires_grad_(False)
        # the front never changes, so its outputs are kept on disk for --resume
        cache_path = os.path.join(os.path.dirname(args.out) or ".", "front_cache.pt")
        key = {"seed": SEED, "synth": len(synth), "cache_aug": args.cache_aug,
               "counts": {k: len(v) for k, v in fit.items()}, "grey": args.grey,
               "crop": args.crop}
        if os.path.exists(cache_path):
            saved = torch.load(cache_path, map_location="cpu", weights_only=False)
            if saved["key"] == key:
                cached = saved["cached"]
        if not cached:
            # a separate RNG, so that the cache is the same whether or not the run resumed
            crng = random.Random(SEED + 1)
            cgen = torch.Generator().manual_seed(SEED + 1)
            for name, pool in [*fit.items(), ("synth", synth)]:
                if pool:
                    cached[name] = cache_front(model, pool, crng, cgen, args.cache_aug)
            torch.save({"key": key, "cached": cached}, cache_path + ".tmp")
            os.replace(cache_path + ".tmp", cache_path)
        print(f"front outputs for {sum(len(v) for v in cached.values())} images ready in "
              f"{time.monotonic() - t_cache:.0f}s", flush=True)

    budget = args.budget_min * 60.0
    if args.until:
        # a wall-clock end (HH:MM, UTC) shortens the budget so the schedule still anneals
        now = datetime.datetime.now(datetime.UTC)
        hh, mm = (int(v) for v in args.until.split(":"))
        end = now.replace(hour=hh, minute=mm, second=0, microsecond=0)
        if end < now:
            end += datetime.timedelta(days=1)
        budget = min(budget, prior_s + (end - now).total_seconds())
        print(f"budget {budget / 60:.1f} min in all (ends by {args.until} UTC)", flush=True)
    start = time.monotonic()

    def elapsed() -> float:
        return prior_s + time.monotonic() - start

    def save() -> None:
        tmp = args.out + ".tmp"
        torch.save({"model": model.state_dict(), "optimizer": opt.state_dict(), "step": step,
                    "seen": seen, "elapsed_s": elapsed(), "py_rng": rng.getstate(),
                    "torch_gen": gen.get_state(), "torch_rng": torch.get_rng_state(),
                    "charset": CHARSET, "grey": args.grey, "crop": args.crop}, tmp)
        os.replace(tmp, args.out)

    ctc = nn.CTCLoss(blank=0, zero_infinity=True)
    pools: dict[str, list] = {**fit, **({"synth": synth} if synth else {}),
                              **{f"imitate/{k}": v for k, v in imitation.items()}}
    stream = None
    if args.workers and not cached:
        stream = iter(torch.utils.data.DataLoader(
            BatchStream(pools, weights, args.batch, args.synth_share, args.imitate_share,
                        SEED + step), batch_size=None, num_workers=args.workers,
            pin_memory=args.device != "cpu", prefetch_factor=4))
    warm = 0.04
    ema: float | None = None
    last_val = last_save = time.monotonic()
    while True:
        frac = elapsed() / budget
        if frac >= 1.0:
            break
        lr = args.lr * warmup_cosine(frac, warm, 0.03)
        for g in opt.param_groups:
            g["lr"] = lr * g["scale"]
        if cached:
            name = pick_pool(rng, pools, weights, args.synth_share, args.imitate_share)
            picks = [rng.randrange(len(pools[name])) for _ in range(args.batch)]
            fitems = [cached[name][k] for k in picks]
            f, frames = feature_batch([feat for feat, _ in fitems], rng)
            logp = model.back(f).log_softmax(2)
            labels = [label for _, label in fitems]
        else:
            name, x, frames, labels = (next(stream) if stream is not None else draw_batch(
                rng, gen, pools, weights, args.batch, args.synth_share, args.imitate_share))
            logp = model(x.to(args.device, non_blocking=True)).log_softmax(2)
        folded = name in datasets.CASE_INSENSITIVE
        if folded:
            logp = fold_log_probs(logp)
        targets = [encode(label, folded) for label in labels]
        loss = ctc(logp, torch.tensor([c for t in targets for c in t], dtype=torch.long,
                                      device=args.device),
                   torch.tensor(frames, dtype=torch.long),
                   torch.tensor([len(t) for t in targets], dtype=torch.long))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 5.0)
        opt.step()
        step += 1
        seen += len(labels)
        ema = loss.item() if ema is None else 0.97 * ema + 0.03 * loss.item()
        now = time.monotonic()
        if step % 25 == 0:
            print(f"step {step} seen {seen} t {elapsed():.0f}s lr {lr:.2e} loss {ema:.3f} "
                  f"({seen / max(1.0, elapsed()):.0f} img/s)", flush=True)
        if now - last_save > args.save_min * 60:
            save()
            last_save = now
        if now - last_val > args.val_min * 60:
            print(f"VAL step {step} t {elapsed():.0f}s "
                  f"{fmt_acc(evaluate(model, val, args.device))}",
                  flush=True)
            last_val = time.monotonic()
    save()
    if args.weights_out:
        torch.save({"model": {k: v.detach().cpu().half() for k, v in
                              model.state_dict().items()}, "charset": CHARSET,
                    "grey": args.grey, "crop": args.crop,
                    "step": step, "seen": seen, "elapsed_s": elapsed()}, args.weights_out)
    print(f"DONE step {step} seen {seen} t {elapsed():.0f}s held-out sample "
          f"{fmt_acc(evaluate(model, val, args.device))}", flush=True)


if __name__ == "__main__":
    main()
