"""Training a custom module from labelled captchas of one scheme (``capd module train``).

Needs the ``modules`` extra (PyTorch, onnx); the service never imports this.

Data: a folder with ``labels.csv`` (header ``file,text``) and the images it names. Every
row is checked before anything trains (``read_dataset``): the file must be inside the
folder and decode as an image, the text must be non-empty and drawn from capd's
alphabet (``ALPHABET``), and there must be at least ``min_samples`` rows. A seeded
shuffle of the file names holds out ``MODULE_HELD_OUT_SHARE`` of them; they are never
trained on, and both the new module and the general engine are scored on them.

Network: ddddocr's architecture (``capd.modules.net``), started from the best general
model of that architecture, the shipped ``finetuned`` engine (or, with ``base``, a stored
module), its output layer cut down to the characters the labels use (each row copied
from the base's row for that character, so step 0 reads like the base). By default
(``freeze="none"``) every layer trains on freshly augmented pixels each step. With
``freeze="front"`` the stem and the first two convolution stages stay frozen; their
outputs are computed once per image and per augmented variant (as many variants as fit
in a quarter of the budget), and the last stage, the BiLSTM and the output layer train
on them: a step costs ~2.5x less, but on Securimage captchas (500 images, 8 minutes)
the module reached 0.677 that way against 0.773 with every layer training. Either way:
CTC, AdamW and a warm-up + cosine schedule over the wall-clock budget.

Width: the network makes one output frame per 8 columns of a 64-pixel-high image, and
crowded characters merge where a label gets few frames each. So every image is read
``stretch`` times wider than its aspect ratio (``auto_stretch``: enough for
MIN_FRAMES_PER_CHAR frames a character on the median training image, 1 where it has
them), in training and when the module serves (manifest ``stretch``).

Tone: a learnt grey-level curve (``net.Tone``, piecewise linear, starting as the
identity) in front of the first convolution, part of the exported graph. Securimage draws
its text in one grey and the lines across it in a darker one; a convolution cannot
lighten the one grey and keep the darker and lighter ones, a curve can. It trains with the
network (every layer training only), at TONE_LR_SCALE times its learning rate, before the
augmentation; on Securimage it gained 0.6-3.0 points in five comparisons (docs/modules.md).

Strokes (on by default: on Securimage +0.8 points over six seeds, nothing lost on two
other schemes; docs/modules.md): ``lines`` draws a strike-through stroke or two in each
image's own dark grey over half of the training images (``strike_lines``), so that
characters the scheme's lines did not cross in the labelled images are seen crossed.
An average (off by default: no gain measured): ``average`` keeps a moving average of
the weights over the second half of the budget and ends with it when it reads the
held-out images at least as well as the last weights.
bfloat16 (on by default where the CPU has bfloat16 matrix hardware, Intel AMX): each
step's forward pass runs under torch.autocast, about 2x the steps in a budget, and so do
the readings of the unlabelled images (below). While a network trains its convolutions
run channels-last (the memory layout oneDNN prefers): a bfloat16 step 2.1x, a float32
one 1.4x faster on one core (bench/bench_train_step.py), reading 1.65x faster in either;
a whole 15-minute run made 1.3-1.6x the steps.

Unlabelled images (optional, ``read_unlabelled``: a folder of the scheme's captchas
without labels, which a site's users can collect by the thousand): at 40% and again at
70% of the training budget the network reads them twice, as they are and 1.25 times
wider, and those it reads the same way both times, with a confidence of at least 0.9 and
at a length the labels have, become training images labelled with that reading, making
up half of every batch from then on (self-training). They are never held out or scored
on, and one that is also among the labelled images is left out.

Networks (``members``; by default two from a budget of MEMBERS_FROM_MINUTES on, else
one): each trains from the base for an equal share of the budget, one after the other,
with batches and augmentation of its own; a later one starts from the unlabelled images
as the ones before it labelled them, and its own rounds keep the images they all read
alike. The module holds them all in one ONNX graph, one output each (net.Ensemble), and
reads with all of them (capd.modules.engine). One network has learnt 500 Securimage
images by 15 minutes; two of 15 minutes each read 1.0 point more on average over four
seeds, and since channels-last steps so do two in 15 minutes together (docs/modules.md).
Lanes (``lanes``; by default two from two threads on, ``default_lanes``): networks that
train at the same time, each lane a chain of networks as above on its share of the
threads, in threads of this process (torch's operations release the GIL). A step hardly
gets faster with a second thread, while two lanes make about 1.7 times the steps of one;
so on 2 cores a module of the default budget has four networks, two per lane.

Export: ONNX (opset 17, dynamic batch and width), then ONNX Runtime's dynamic int8
quantisation, kept when it loses at most ``MAX_INT8_DROP`` or one image of the float
file's held-out accuracy (one image is below what a small held-out set resolves); a
confidence calibration (isotonic, conservative) is fitted on the held-out readings and
goes into the manifest. When training ends below the base's held-out accuracy (too few
steps on a busy machine can do that), the base's weights are kept instead. Three reading
rules are then tried on the held-out images, each kept when it does not lose there: the
second look (an unsure reading read again wider), the vote (an unsure reading read again
at several widths, the answer most of them give winning: manifest ``vote``) and the
length rule (answers as long as the training labels: manifest ``lengths``, see
capd.modules.engine).
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import math
import os
import random
import resource
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

# on a shared CPU, idle OpenMP threads should sleep rather than spin (set before torch)
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from capd.constants import (  # noqa: E402
    MODULE_HELD_OUT_SHARE,
    MODULE_MIN_SAMPLES,
    MODULE_PROGRESS_EVERY_S,
)
from capd.domain.tasks import ImageSpec  # noqa: E402
from capd.modules.engine import ModuleEngine  # noqa: E402
from capd.modules.library import (  # noqa: E402
    LANE_MAX_WIDTH,
    MAX_LABEL_LENGTH,
    MAX_LANES,
    MAX_STRETCH,
    MIN_STRETCH,
    Module,
    pack,
    unpack,
)
from capd.modules.net import (  # noqa: E402
    FRONT_BLOCKS,
    STRIDE,
    TONE_KNOTS,
    DdddNet,
    Ensemble,
    Tone,
    load_onnx_weights,
    set_channels_last,
)
from capd.solving.ocr.base import Recogniser, UnreadableImage, open_image  # noqa: E402
from capd.solving.ocr.finetuned_engine import (  # noqa: E402
    GREY_MODES,
    META_FILE,
    MODEL_FILE,
    SECOND_LOOK_AT,
    SECOND_LOOK_STRETCH,
    grey64,
    shipped_file,
)
from capd.solving.ocr.onnx_engine import Calibration  # noqa: E402
from capd.solving.ocr.post import ctc_runs  # noqa: E402

# what a label may hold: the capd / finetuned engines' alphabet (case kept)
ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ+-×="
SPLIT_SEED = 20261127
MAX_INT8_DROP = 0.005  # int8 ships when it loses at most this much held-out accuracy
CACHE_SHARE = 0.25  # at most this share of the budget goes to caching augmented variants
MAX_VARIANTS = 12  # cached variants per training image (the first is the image as it is)
# unlabelled images (semi-supervised): at these shares of the training budget the network
# reads them, and those it reads with at least PSEUDO_MIN_CONFIDENCE (the product of each
# character's probability), the same at SECOND_LOOK_STRETCH times the width, at a length
# the labels have become training images with that reading as their label, in
# PSEUDO_SHARE of every batch, until the next round
PSEUDO_ROUNDS = (0.4, 0.7)
PSEUDO_MIN_CONFIDENCE = 0.9
PSEUDO_SHARE = 0.5
# the width a module reads at (``stretch``), by default: wide enough that the median
# training image gets MIN_FRAMES_PER_CHAR output frames (one per 8 columns at 64 pixels
# high) per character of its label, never narrower than the image's own aspect ratio and
# at most MAX_AUTO_STRETCH times wider (Securimage's 200 x 80 captchas of 6 characters get
# 3.3 frames a character as they are, and read 1.5 times wider)
MIN_FRAMES_PER_CHAR = 5.0
MAX_AUTO_STRETCH = 2.0
TONE_LR_SCALE = 20.0  # the tone curve's learning rate against the network's
MODULE_TONE = True  # capd module train learns a tone curve unless told --no-tone
# strike-through strokes drawn over training images (``strike_lines``): the share of
# images that get one, and the grey quantile of each image they are drawn in
LINES_SHARE = 0.5
LINES_QUANTILE = 0.02
MODULE_LINES = True  # capd module train draws them unless told --no-lines
# an exponential moving average of the weights from AVERAGE_FROM of the budget on
# (decay AVERAGE_DECAY a step); kept at the end when it reads the held-out images at
# least as well as the last weights
AVERAGE_FROM = 0.5
AVERAGE_DECAY = 0.99
MODULE_AVERAGE = False
# an unsure reading (raw confidence below VOTE_BELOW) is read again at these width factors
# and the answer most widths give wins (post.decode_by_vote); measured on Securimage
# modules: +0.7 points over twelve, a tenth to a fifth of the images read again
# (docs/modules.md)
VOTE_BELOW = 0.95
VOTE_STRETCHES = (0.8, 0.9, 1.1, 1.25, 1.4)
# networks a module trains one after the other, each for an equal share of the budget;
# it reads with all of them (net.Ensemble, post.decode_by_members). By default one, and
# two from a budget of MEMBERS_FROM_MINUTES: one network learns 500 Securimage images in
# 15 minutes and more steps do not help it, while two read 0.978 on average where one
# read 0.968 (same seeds). Two in 15 minutes gained nothing at first (~300 steps each);
# with channels-last steps and the unlabelled images read in bfloat16 each gets ~560
# steps there and the pair reads as two of 15 minutes each did (docs/modules.md). Where
# steps run in float32 (no AMX) a step takes 3.1x as long (bench_train_step): two
# networks only from a budget that gives each about the steps that gained here before
MEMBERS_FROM_MINUTES = 15.0
MEMBERS_FROM_MINUTES_FLOAT32 = 45.0
# lanes: networks that train at the same time, each on its own share of the threads.
# A module's step is mostly small convolutions and an LSTM, which a second thread hardly
# speeds up (a bfloat16 channels-last step: 0.84-1.01 s on one thread, 0.75-0.79 s on two),
# while two networks training side by side each keep about one thread's pace; so from two
# threads on, two lanes train at once, each its own chain of networks (the default count
# per lane, ``default_members``; at most MAX_LANES). Each lane holds a network's
# activations: two lanes only where the training images are at most LANE_MAX_WIDTH pixels
# wide at 64 high (one lane of generic colour capitals, up to 512, peaked at 3.5 GB; one
# of Securimage, 240, at 1.2)

# a module of more networks than FIRST_MEMBERS reads with its first FIRST_MEMBERS (the
# first of each lane, trained apart) before the others, which run only when these disagree
# or are unsure (manifest first_members, the later networks in rest.onnx); kept when it
# reads the held-out images as well. On five four-network Securimage modules the same
# answers, three quarters of the images read by two networks (docs/modules.md)
FIRST_MEMBERS = 2
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp", ".tif", ".tiff")
Progress = Callable[[str], None]


def cpu_has_bf16_matrix() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (Intel AMX): there
    training's forward pass runs in bfloat16, about twice as many steps in a budget; on
    other CPUs bfloat16 is emulated and slower, so it stays float32."""
    probe = getattr(torch.cpu, "_is_amx_tile_supported", None)
    if probe is not None:
        try:
            return bool(probe())
        except RuntimeError:
            return False
    try:
        return "amx_bf16" in Path("/proc/cpuinfo").read_text()
    except OSError:
        return False


def default_members(minutes: float, bf16: bool = True) -> int:
    """How many networks a budget of ``minutes`` trains by default: two from
    MEMBERS_FROM_MINUTES on with bfloat16 steps (``bf16``), from
    MEMBERS_FROM_MINUTES_FLOAT32 on with float32 steps, else one."""
    return 2 if minutes >= (MEMBERS_FROM_MINUTES if bf16 else MEMBERS_FROM_MINUTES_FLOAT32
                            ) else 1


def serialised(progress: Progress) -> Progress:
    """``progress`` one line at a time (lanes report from threads of their own)."""
    lock = threading.Lock()

    def say(line: str) -> None:
        with lock:
            progress(line)
    return say


def default_lanes(threads: int, widest: int) -> int:
    """How many networks train at the same time by default (MAX_LANES): one per thread
    up to MAX_LANES, one where the widest training image (``widest`` pixels at 64 high,
    stretched as trained) is wider than LANE_MAX_WIDTH."""
    return 1 if widest > LANE_MAX_WIDTH else max(1, min(MAX_LANES, threads))


class DataError(Exception):
    """The labelled folder cannot be trained on; the message is one line."""


@dataclass(frozen=True)
class Sample:
    name: str
    text: str
    image: bytes
    grey: np.ndarray  # (64, W) uint8, the engine's own preprocessing


@dataclass(frozen=True)
class Outcome:
    """What training produced: the module file's bytes and its manifest."""

    data: bytes
    manifest: dict[str, Any]


def read_dataset(folder: str | os.PathLike[str], min_samples: int = MODULE_MIN_SAMPLES
                 ) -> list[Sample]:
    """Every labelled image of ``folder``, checked (see the module docstring)."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    labels = root / "labels.csv"
    if not labels.is_file():
        raise DataError(f"{root}: no labels.csv (a file,text header, one row per image)")
    try:
        with labels.open(newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            if not reader.fieldnames or not {"file", "text"} <= set(reader.fieldnames):
                raise DataError(f"{labels}: the header must name the columns file,text")
            rows = [(reader.line_num, r.get("file") or "", r.get("text") or "")
                    for r in reader]
    except UnicodeDecodeError:
        raise DataError(f"{labels}: not UTF-8 text") from None
    except csv.Error as exc:
        raise DataError(f"{labels}: not CSV ({exc})") from None
    allowed = set(ALPHABET)
    seen: set[str] = set()
    samples = []
    base = root.resolve()
    for line, name, text in rows:
        where = f"{labels.name} line {line}"
        if not name:
            raise DataError(f"{where}: no file name")
        if name in seen:
            raise DataError(f"{where}: {name!r} is labelled twice")
        seen.add(name)
        if not text:
            raise DataError(f"{where}: {name!r} has an empty label")
        outside = sorted(set(text) - allowed)
        if outside:
            raise DataError(f"{where}: label {text!r} has characters outside the alphabet"
                            f" ({''.join(outside)!r}; allowed: 0-9 a-z A-Z + - × =)")
        path = (root / name).resolve()
        if base not in path.parents:
            raise DataError(f"{where}: {name!r} is outside {root}")
        try:
            data = path.read_bytes()
            grey = grey64(open_image(data))
        except OSError as exc:
            raise DataError(f"{where}: cannot read {name!r} ({exc.strerror})") from None
        except UnreadableImage as exc:
            raise DataError(f"{where}: {name!r} is not a readable image ({exc})") from None
        samples.append(Sample(name, text, data, grey))
    if len(samples) < min_samples:
        raise DataError(f"{labels}: {len(samples)} labelled images; at least {min_samples}"
                        " are needed")
    return samples


def read_unlabelled(folder: str | os.PathLike[str]) -> list[bytes]:
    """Every image file of ``folder`` (by suffix, not in subfolders), each checked to
    decode: unlabelled captchas of the scheme, for semi-supervised training."""
    root = Path(folder)
    if not root.is_dir():
        raise DataError(f"{root}: not a directory")
    images = []
    for path in sorted(root.iterdir()):
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        try:
            data = path.read_bytes()
            open_image(data)
        except OSError as exc:
            raise DataError(f"{path}: cannot read it ({exc.strerror})") from None
        except UnreadableImage as exc:
            raise DataError(f"{path}: not a readable image ({exc})") from None
        images.append(data)
    if not images:
        raise DataError(f"{root}: no images (files ending {', '.join(IMAGE_SUFFIXES)})")
    return images


def split(samples: list[Sample], held_share: float = MODULE_HELD_OUT_SHARE
          ) -> tuple[list[Sample], list[Sample]]:
    """(train, held-out): file names sorted, shuffled with a fixed seed, the last
    ``held_share`` (at least one image) held out."""
    ordered = sorted(samples, key=lambda s: s.name)
    random.Random(SPLIT_SEED).shuffle(ordered)
    held = max(1, round(len(ordered) * held_share))
    return ordered[:-held], ordered[-held:]


def auto_stretch(samples: list[Sample]) -> float:
    """The width factor a module trained on ``samples`` reads at by default (see
    MIN_FRAMES_PER_CHAR), from their unstretched greys and their labels' lengths."""
    per_char = sorted(s.grey.shape[1] / STRIDE / len(s.text) for s in samples)
    median = per_char[len(per_char) // 2]
    return round(min(MAX_AUTO_STRETCH, max(1.0, MIN_FRAMES_PER_CHAR / median)), 2)


def charset_of(texts: list[str]) -> list[str]:
    """The characters the labels use, in ALPHABET's order."""
    used = set("".join(texts))
    return [c for c in ALPHABET if c in used]


def case_matters(texts: list[str]) -> bool:
    """Whether labels carry case: both upper- and lower-case letters occur."""
    joined = "".join(texts)
    return any(c.isupper() for c in joined) and any(c.islower() for c in joined)


def scoring_spec(texts: list[str]) -> ImageSpec:
    """The task options a client of this scheme would send: digits only when every
    label is digits, case-sensitive only when labels mix cases."""
    digits = all(t.isdigit() for t in texts)
    return ImageSpec(case_sensitive=case_matters(texts), numeric=1 if digits else 0)


def is_right(answer: str, label: str, spec: ImageSpec) -> bool:
    return answer == label if spec.case_sensitive else answer.lower() == label.lower()


# -- base network ---------------------------------------------------------------------------
def general_base() -> tuple[bytes, list[str], str]:
    """The shipped finetuned engine's int8 file and charset: the default base."""
    meta = json.loads(shipped_file(META_FILE))
    return shipped_file(MODEL_FILE), list(meta["charset"]), "finetuned"


def general_grey() -> str:
    """How the default base (the shipped finetuned engine) turns colour grey."""
    return str(json.loads(shipped_file(META_FILE)).get("grey", "luminance"))


def base_network(model: bytes, base_charset: list[str], charset: list[str],
                 label: str) -> DdddNet:
    """The base's weights with an output layer over ``charset`` (rows copied)."""
    missing = [c for c in charset if c not in base_charset]
    if missing:
        raise DataError(f"the labels use characters the base {label} cannot read:"
                        f" {''.join(missing)!r}")
    net = DdddNet(n_classes=len(base_charset) + 1)
    from google.protobuf.message import DecodeError as NotOnnx

    try:
        load_onnx_weights(net, io.BytesIO(model))
    except (ValueError, KeyError, StopIteration, IndexError, NotOnnx) as exc:
        raise DataError(f"the base {label} cannot be trained further (its weights are not an"
                        f" ONNX file of this network: {exc})") from None
    old = net.head
    new = nn.Linear(old.in_features, len(charset) + 1)
    rows = [0] + [base_charset.index(c) + 1 for c in charset]
    with torch.no_grad():
        new.weight.copy_(old.weight[rows])
        new.bias.copy_(old.bias[rows])
    net.head = new
    return net


def warmup_cosine(frac: float, warm: float, floor: float) -> float:
    """The learning rate's share of its peak at ``frac`` of the budget: a linear warm-up
    over the first ``warm``, then a cosine down to ``floor`` (training/ uses it too)."""
    if frac < warm:
        return frac / warm
    return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * (frac - warm) / (1 - warm)))


# -- augmentation and batches (training/finetune.py uses these too) ------------------------
def augment(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
    """Light augmentation of a (N, 1, 64, W) batch in [0, 1]: a small affine warp
    (shear, slight rotation, scale, shift) on 60% of the images, contrast and brightness
    jitter, sometimes a blur or Gaussian noise."""
    n = x.shape[0]

    def u(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, generator=gen)

    on = (torch.rand(n, generator=gen) < 0.6).float()
    theta = torch.zeros(n, 2, 3)
    theta[:, 0, 0] = 1 + on * u(-0.03, 0.06)
    theta[:, 0, 1] = on * u(-0.08, 0.08)   # shear
    theta[:, 0, 2] = on * u(-0.02, 0.02)
    theta[:, 1, 0] = on * u(-0.02, 0.02)   # slight rotation
    theta[:, 1, 1] = 1 + on * u(-0.05, 0.08)
    theta[:, 1, 2] = on * u(-0.05, 0.05)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, padding_mode="border", align_corners=False)
    mean = x.mean(dim=(2, 3), keepdim=True)
    x = (x - mean) * u(0.75, 1.2).view(n, 1, 1, 1) + mean + u(-0.08, 0.08).view(n, 1, 1, 1)
    blur = (torch.rand(n, 1, 1, 1, generator=gen) < 0.15).float()
    k = torch.tensor([[1.0, 2.0, 1.0], [2.0, 4.0, 2.0], [1.0, 2.0, 1.0]]) / 16.0
    blurred = F.conv2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), k.view(1, 1, 3, 3))
    x = blur * blurred + (1 - blur) * x
    noisy = (torch.rand(n, 1, 1, 1, generator=gen) < 0.25).float()
    sigma = u(0.0, 0.06).view(n, 1, 1, 1)
    x = x + noisy * sigma * torch.randn(x.shape, generator=gen)
    return x.clamp(0.0, 1.0)


def strike_lines(x: torch.Tensor, gen: torch.Generator, share: float = LINES_SHARE
                 ) -> torch.Tensor:
    """Strokes across a (N, 1, 64, W) batch in [0, 1], drawn before the tone curve: on
    ``share`` of the images one stroke, on half of those a second; each a gentle wave
    (a slope, a sine of 40-200 columns' period and up to 6 rows' height) 1.5-4.5 pixels
    thick, in the image's own dark grey (its LINES_QUANTILE quantile), so that a line
    of the scheme's colour crosses characters it did not cross in the labelled image."""
    n, _, h, w = x.shape

    def u(lo: float, hi: float) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(n, 1, generator=gen)

    grey = torch.quantile(x.flatten(1), LINES_QUANTILE, dim=1).view(n, 1, 1, 1)
    cols = torch.arange(w, dtype=torch.float32).view(1, w)
    rows = torch.arange(h, dtype=torch.float32).view(1, h, 1)
    on = torch.rand(n, 1, generator=gen) < share
    for stroke in range(2):
        if stroke:
            on = on & (torch.rand(n, 1, generator=gen) < 0.5)
        centre = u(8.0, h - 8.0) + u(-20.0, 20.0) * (cols / w - 0.5)
        wave = u(0.0, 6.0) * torch.sin(2 * math.pi * cols / u(40.0, 200.0) + u(0.0, 6.3))
        ys = (centre + wave).view(n, 1, w)
        half = u(0.75, 2.25).view(n, 1, 1)
        mask = ((half + 0.5 - (rows - ys).abs()).clamp(0.0, 1.0) * on.view(n, 1, 1).float())
        mask = mask[:, None]
        x = x * (1 - mask) + grey * mask
    return x


def feature_batch(feats_in: list[torch.Tensor], rng: random.Random
                  ) -> tuple[torch.Tensor, list[int]]:
    """Cached front outputs (C, 16, W/4) -> a (N, C, 16, Wmax) float batch, each one's
    width jittered (x0.9-1.1, bilinear) and right-padded with its last column, plus
    each one's frame count."""
    feats = []
    for feat in feats_in:
        w = feat.shape[-1]
        new_w = max(4, int(round(w * rng.uniform(0.9, 1.1))))
        f = feat.float()[None]
        if new_w != w:
            f = F.interpolate(f, size=(f.shape[2], new_w), mode="bilinear",
                              align_corners=False)
        feats.append(f[0])
    wmax = max(f.shape[-1] for f in feats)
    wmax += wmax % 2
    batch = torch.empty(len(feats), feats[0].shape[0], feats[0].shape[1], wmax)
    frames = []
    for i, f in enumerate(feats):
        w = f.shape[-1]
        batch[i, :, :, :w] = f
        batch[i, :, :, w:] = f[:, :, -1:]
        frames.append((w + 1) // 2)
    return batch, frames


def pixel_batch(greys: list[np.ndarray], rng: random.Random
                ) -> tuple[torch.Tensor, list[int]]:
    """uint8 grey images of height 64 -> a (N, 1, 64, Wmax) float batch in [0, 1], each
    one's width jittered (x0.88-1.12) and right-padded with its last column, plus each
    one's frame count (the network emits a frame per 8 columns)."""
    from PIL import Image

    scaled = []
    for grey in greys:
        h, w = grey.shape
        new_w = max(32, int(round(w * rng.uniform(0.88, 1.12))))
        img = Image.fromarray(grey).resize((new_w, h), Image.Resampling.BILINEAR)
        scaled.append(np.asarray(img, dtype=np.uint8))
    wmax = max(s.shape[1] for s in scaled)
    wmax = (wmax + 7) // 8 * 8
    batch = np.empty((len(scaled), 1, 64, wmax), dtype=np.uint8)
    frames = []
    for i, img_arr in enumerate(scaled):
        w = img_arr.shape[1]
        batch[i, 0, :, :w] = img_arr
        batch[i, 0, :, w:] = img_arr[:, -1:]
        frames.append((w + 7) // 8)
    return torch.from_numpy(batch).float() / 255.0, frames


def fit_isotonic(pairs: list[tuple[float, bool]], z: float = 1.28
                 ) -> tuple[list[float], list[float]]:
    """Pool-adjacent-violators on (raw confidence, right), then each block's accuracy is
    replaced by its Wilson lower bound (z=1.28: one-sided 90%) and made non-decreasing by
    lowering, never raising: a conservative isotonic map. Knots at block mean raw values."""
    pairs = sorted(pairs)
    blocks: list[list[float]] = []  # [sum_y, count, sum_x]
    for x, y in pairs:
        blocks.append([float(y), 1.0, x])
        while len(blocks) > 1 and blocks[-2][0] / blocks[-2][1] >= blocks[-1][0] / blocks[-1][1]:
            s, n, sx = blocks.pop()
            blocks[-1][0] += s
            blocks[-1][1] += n
            blocks[-1][2] += sx
    xs = [b[2] / b[1] for b in blocks]
    ys = []
    for s, n, _ in blocks:
        p = s / n
        centre = p + z * z / (2 * n)
        margin = z * ((p * (1 - p) / n + z * z / (4 * n * n)) ** 0.5)
        ys.append(max(0.0, (centre - margin) / (1 + z * z / n)))
    for i in range(len(ys) - 2, -1, -1):
        ys[i] = min(ys[i], ys[i + 1])
    # anchor the ends so that interpolation is defined on [0, 1]
    xs = [0.0, *xs, 1.0]
    ys = [0.0, *ys, ys[-1]]
    return xs, ys


# -- scoring --------------------------------------------------------------------------------
def score(engine: Recogniser, held: list[Sample], spec: ImageSpec
          ) -> tuple[float, list[tuple[float, bool]]]:
    """Exact accuracy on the held-out images and the (confidence, right) pairs."""
    pairs = []
    for s in held:
        try:
            reading = engine.read(s.image, spec)
            text, conf = reading.text, reading.confidence
        except UnreadableImage:
            text, conf = "", 0.0
        pairs.append((conf, is_right(text, s.text, spec)))
    return sum(ok for _, ok in pairs) / len(held), pairs


def held_accuracy(net: nn.Module, held: list[Sample], charset: list[str], spec: ImageSpec
                  ) -> float:
    """Exact accuracy of the PyTorch network on the held-out images (greedy CTC over the
    module's charset; case folded when the spec ignores case)."""
    was_training = net.training
    net.eval()
    right = 0
    with torch.no_grad():
        for s in held:
            x = torch.from_numpy(np.array(s.grey)).float().div(255.0)[None, None]
            read, _ = greedy_reading(net(x)[:, 0])
            right += is_right("".join(charset[k - 1] for k in read), s.text, spec)
    net.train(was_training)
    return right / len(held)


def greedy_reading(probs: torch.Tensor) -> tuple[list[int], float]:
    """Greedy CTC over one image's (T, classes) probabilities: the column indices read
    (blank 0 dropped, repeats merged) and the product of each one's peak probability."""
    peak, best = probs.max(-1)
    read, peaks = ctc_runs(best.tolist(), peak.tolist())
    return read, math.prod(peaks)


def read_greys(net: nn.Module, greys: list[np.ndarray], bf16: bool = False
               ) -> list[tuple[list[int], float]]:
    """The network's greedy reading (greedy_reading) of every image, in order;
    ``bf16``: the network runs in bfloat16 (torch.autocast), the softmax in float32."""
    was_training = net.training
    net.eval()
    by_shape: dict[tuple[int, ...], list[int]] = {}
    for i, g in enumerate(greys):  # same-size images go through the network together
        by_shape.setdefault(g.shape, []).append(i)
    out: list[tuple[list[int], float]] = [([], 0.0)] * len(greys)
    with torch.no_grad():
        for group in by_shape.values():
            for at in range(0, len(group), 32):
                chunk = group[at:at + 32]
                x = torch.from_numpy(np.stack([greys[i] for i in chunk])).float().div(255.0)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    logits = net(x[:, None])
                probs = logits.float().softmax(-1)
                for j, i in enumerate(chunk):
                    out[i] = greedy_reading(probs[:, j])
    net.train(was_training)
    return out


def pseudo_label(net: nn.Module | Sequence[nn.Module], greys: list[np.ndarray],
                 lengths: tuple[int, int], min_confidence: float | None = None,
                 wide: list[np.ndarray] | None = None,
                 agree_with: dict[int, list[int]] | None = None, bf16: bool = False
                 ) -> list[tuple[int, list[int]]]:
    """(index, label as column indices) of each unlabelled image the network reads with
    at least ``min_confidence`` (default PSEUDO_MIN_CONFIDENCE) at a length within
    ``lengths`` (inclusive); with ``wide`` (the same images stretched wider), only those
    it reads the same way in both. Given several networks, only the images every one of
    them reads so, the same way; ``agree_with``: the readings of networks read before
    (an earlier call's result as a dict), which the images kept must match too.
    ``bf16``: read in bfloat16 (read_greys)."""
    if min_confidence is None:
        min_confidence = PSEUDO_MIN_CONFIDENCE
    kept = agree_with
    for one in [net] if isinstance(net, nn.Module) else net:
        readings = read_greys(one, greys, bf16)
        again = read_greys(one, wide, bf16) if wide is not None else readings
        mine = {i: label for i, ((label, conf), (label2, _)) in enumerate(
                    zip(readings, again, strict=True))
                if lengths[0] <= len(label) <= lengths[1] and conf >= min_confidence
                and label == label2}
        kept = mine if kept is None else {i: label for i, label in kept.items()
                                          if mine.get(i) == label}
    return sorted((kept or {}).items())


def peak_memory_mb() -> float:
    """This process's peak resident memory so far (Linux reports kB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# -- training -------------------------------------------------------------------------------
def train(name: str, samples: list[Sample], minutes: float, progress: Progress,
          base: tuple[bytes, list[str], str] | None = None,
          general: tuple[str, Recogniser] | None = None, threads: int = 0,
          seed: int = SPLIT_SEED, clock: Callable[[], float] = time.monotonic,
          keep_best: bool = True, lr: float = 5e-4, freeze: str = "none",
          grey: str | None = None, unlabelled: list[bytes] | None = None,
          on_pseudo: Callable[[list[tuple[int, str]]], None] | None = None,
          stretch: float | None = None, tone: bool | None = None,
          lines: bool | None = None, average: bool | None = None,
          bf16: bool | None = None, members: int | None = None,
          lanes: int | None = None) -> Outcome:
    """Train a module named ``name`` on ``samples`` for at most ``minutes`` of wall
    clock (see the module docstring). ``general`` is (engine name, engine) scored on the
    same held-out images for comparison; ``progress`` receives one line at a time.
    ``lr``: the peak learning rate. ``keep_best``: keep the base's weights when training
    ends below them on the held-out images. ``freeze``: ``none`` (every layer trains on
    freshly augmented pixels each step) or ``front`` (the stem and first stages stay at
    the base's weights, their outputs cached: ~2.5x cheaper steps, but measured worse).
    ``grey``: how the module turns colour grey (finetuned_engine.GREY_MODES), by default
    the base's way (the default base's from its metadata; any other base: luminance),
    so that step 0 sees images as the base learnt them; the manifest records it.
    ``unlabelled``: images of the scheme without labels (``read_unlabelled``), labelled by
    the network itself as it trains (PSEUDO_ROUNDS; ``freeze="none"`` only);
    ``on_pseudo`` receives each round's (index into ``unlabelled``, text) pairs.
    ``stretch``: the module reads every image this many times wider than its aspect ratio
    at 64 pixels high (more output frames per character for crowded text), in training and
    when it serves; by default ``auto_stretch`` of the training images. The manifest
    records it. ``tone``: learn a grey-level curve in front of the network (net.Tone,
    trained at TONE_LR_SCALE times the learning rate, applied before the augmentation;
    default MODULE_TONE); a base that has one keeps it. The manifest records whether the
    module has one. ``lines``: draw strike-through strokes over the training images
    (``strike_lines``; every layer training only; default MODULE_LINES). ``average``:
    keep a moving average of the weights over the second half of training and end with
    it when it reads the held-out images at least as well (default MODULE_AVERAGE).
    ``bf16``: run the training steps' forward pass and the readings of the unlabelled
    images in bfloat16 (torch.autocast; the weights, the tone curve, the loss and every
    held-out reading stay float32); by
    default where the CPU does bfloat16 matrices in hardware (``cpu_has_bf16_matrix``).
    The manifest records it (``precision``). ``members``: how many networks to train,
    one after the other, each from the base for an equal share of what is left of the
    budget, into one ONNX file with an output per network (net.Ensemble), which the
    engine reads with all of them (post.decode_by_members; default ``default_members``;
    one with a frozen front). Each later network starts with the unlabelled images labelled
    by those before it. ``lanes``: how many networks train at the same time, each lane a
    chain of networks as above on its share of the threads (default ``default_lanes``);
    by default each lane trains ``default_members`` networks, the networks dealt to the
    lanes in turn (network k to lane k mod lanes)."""
    if unlabelled and freeze != "none":
        raise ValueError("unlabelled images need freeze='none'")
    if freeze not in ("front", "none"):
        raise ValueError(f"freeze must be 'front' or 'none', not {freeze!r}")
    if grey is None:
        grey = general_grey() if base is None else "luminance"
    if grey not in GREY_MODES:
        raise ValueError(f"grey must be one of {GREY_MODES}, not {grey!r}")
    if stretch is None:
        stretch = auto_stretch(split(samples)[0])
    if not MIN_STRETCH <= stretch <= MAX_STRETCH:
        raise ValueError(f"stretch must be within {MIN_STRETCH:g}-{MAX_STRETCH:g}")
    if grey != "luminance" or stretch != 1.0:  # read_dataset: by luminance, unstretched
        samples = [replace(s, grey=grey64(open_image(s.image), stretch, grey=grey))
                   for s in samples]
    started = clock()
    budget = minutes * 60.0
    progress = serialised(progress)
    threads = threads or max(1, len(os.sched_getaffinity(0)))
    torch.set_num_threads(threads)
    rng = random.Random(seed)
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    fit, held = split(samples)
    charset = charset_of([s.text for s in samples])
    spec = scoring_spec([s.text for s in samples])
    base_model, base_charset, base_label = base or general_base()
    net = base_network(base_model, base_charset, charset, base_label)
    if tone is None:
        tone = MODULE_TONE
    if lines is None:
        lines = MODULE_LINES
    lines = lines and freeze == "none"  # a frozen front trains on cached features
    if average is None:
        average = MODULE_AVERAGE
    if bf16 is None:
        bf16 = cpu_has_bf16_matrix()
    if lanes is None:
        lanes = default_lanes(threads, max(s.grey.shape[1] for s in fit))
    if lanes < 1:
        raise ValueError("lanes must be at least 1")
    if members is None:
        members = lanes * default_members(minutes, bf16)
    if members < 1:
        raise ValueError("members must be at least 1")
    if freeze == "front":  # the cached features are the first network's
        members = 1
    lanes = min(lanes, members)
    # (a base module's own curve stays with its weights; a frozen front learns none)
    if tone and net.tone is None and freeze == "none":
        net.tone = Tone()
    progress(f"{len(samples)} labelled images: {len(fit)} to train on, {len(held)} held out;"
             f" {len(charset)} symbols; base {base_label}; budget {minutes:g} min")
    if bf16:
        progress("training steps run in bfloat16 (weights and held-out readings stay float32)")
    if stretch != 1.0:
        progress(f"reading images {stretch:g} times wider than their aspect ratio"
                 " (more output frames a character)")

    cached: list[list[torch.Tensor]] = [[] for _ in fit]
    if freeze == "front":
        frozen = [*net.stem.parameters(), *net.body[:FRONT_BLOCKS].parameters()]
        for p in [*frozen, *(net.tone.parameters() if net.tone is not None else [])]:
            p.requires_grad_(False)
        by_shape: dict[tuple[int, ...], list[int]] = {}
        for i, s in enumerate(fit):  # same-size images run through the front together
            by_shape.setdefault(s.grey.shape, []).append(i)
        net.eval()
        with torch.no_grad():
            for variant in range(MAX_VARIANTS):
                if variant and clock() - started > budget * CACHE_SHARE:
                    break
                for group in by_shape.values():
                    for at in range(0, len(group), 32):
                        chunk = group[at:at + 32]
                        x = torch.from_numpy(np.stack([fit[i].grey for i in chunk]))
                        x = x.float().div(255.0)[:, None]
                        if net.tone is not None:  # a base's curve (frozen with the front)
                            x = net.tone(x)
                        if variant:
                            x = augment(x, gen)
                        for i, feat in zip(chunk, net.front(x).half(), strict=True):
                            cached[i].append(feat)
                progress(f"prepared variant {variant + 1} of every training image"
                         f" ({clock() - started:.0f}s)")
    targets = [[charset.index(c) + 1 for c in s.text] for s in fit]
    # an unlabelled image that is one of the labelled ones (the labelled folder given
    # again, say) is left out: it could carry a held-out image into training
    labelled = {hashlib.sha256(s.image).digest() for s in samples}
    origin = [i for i, data in enumerate(unlabelled or [])
              if hashlib.sha256(data).digest() not in labelled]
    if unlabelled and len(origin) < len(unlabelled):
        progress(f"{len(unlabelled) - len(origin)} of the {len(unlabelled)} unlabelled images"
                 " are labelled images too: left out")
    opened = [open_image(unlabelled[i]) for i in origin] if unlabelled else []
    spare = [grey64(img, stretch, grey=grey) for img in opened]
    spare_wide = [grey64(img, stretch * SECOND_LOOK_STRETCH, grey=grey) for img in opened]
    lengths = (min(len(t) for t in targets), max(len(t) for t in targets))
    batch = min(32, len(fit))
    start_acc = held_accuracy(net, held, charset, spec)
    start_weights = {k: v.clone() for k, v in net.state_dict().items()}
    progress(f"held-out accuracy before training (the base, {len(charset)} symbols):"
             f" {start_acc:.3f}")
    if lanes > 1:
        progress(f"training {members} networks, {lanes} at a time ({threads // lanes or 1}"
                 f" thread{'s' if threads // lanes > 1 else ''} each), each from the base;"
                 " the module reads with all of them")
    elif members > 1:
        progress(f"training {members} networks one after the other, each from the base,"
                 " for an equal share of the budget; the module reads with all of them")

    def fit_one(net: DdddNet, rng: random.Random, gen: torch.Generator,
                teachers: list[DdddNet], member_budget: float, progress: Progress
                ) -> tuple[int, bool, int, float]:
        """Train ``net`` for ``member_budget`` seconds: (steps, whether its weights'
        moving average was kept, images its last pseudo-label round kept, its held-out
        accuracy). Networks trained before it in its lane (``teachers``) label the
        unlabelled images at its start, and with it at its later rounds (the images they
        all read alike)."""
        rounds = ([0.0] if teachers else []) + list(PSEUDO_ROUNDS) if spare else []
        pseudo: list[tuple[int, list[int]]] = []
        taught: dict[int, list[int]] | None = None  # the teachers' (fixed) sure readings
        # channels-last convolutions: faster steps and readings (module docstring); back
        # to the standard layout at the end
        set_channels_last(net)
        params = [p for p in net.parameters() if p.requires_grad]
        tone_params = list(net.tone.parameters()) if net.tone is not None else []
        rest = [p for p in params if all(p is not q for q in tone_params)]
        opt = torch.optim.AdamW([{"params": rest, "scale": 1.0},
                                 {"params": tone_params, "scale": TONE_LR_SCALE,
                                  "weight_decay": 0.0}], lr=lr, weight_decay=1e-4)
        ctc = nn.CTCLoss(blank=0, zero_infinity=True)
        warm, peak_lr = 0.05, lr
        train_start = clock()
        step, ema, last_print = 0, float("nan"), train_start
        averaged: list[torch.Tensor] = []
        average_kept = False
        net.train()
        while True:
            if stop.is_set():  # another lane failed, or training was interrupted
                return step, False, 0, 0.0
            frac = (clock() - train_start) / member_budget
            if frac >= 1.0 and step > 0:
                break
            frac = min(frac, 1.0)
            rate = peak_lr * warmup_cosine(frac, warm, 0.03)
            for g in opt.param_groups:
                g["lr"] = rate * g["scale"]
            if rounds and frac >= rounds[0]:
                rounds.pop(0)
                if teachers and taught is None:  # they no longer change: read them once
                    taught = dict(pseudo_label(teachers, spare, lengths, wide=spare_wide,
                                               bf16=bf16))
                pseudo = (pseudo_label(net, spare, lengths, wide=spare_wide,
                                       agree_with=taught, bf16=bf16)
                          if step or taught is None else sorted(taught.items()))
                by = (f" (the networks trained before{', with this one' if step else ''})"
                      if teachers else "")
                progress(f"read the {len(spare)} unlabelled images{by}: {len(pseudo)} read"
                         f" surely enough (>= {PSEUDO_MIN_CONFIDENCE:g}, the same at"
                         f" {SECOND_LOOK_STRETCH:g}x the width) to train on as labelled")
                if on_pseudo is not None:
                    on_pseudo([(origin[i], "".join(charset[k - 1] for k in label))
                               for i, label in pseudo])
            picks = [rng.randrange(len(fit)) for _ in range(batch)]
            labels = [targets[k] for k in picks]
            if freeze == "front":
                feats, frames = feature_batch([rng.choice(cached[k]) for k in picks], rng)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    out = net.back(feats)
                logp = out.float().log_softmax(2)
            else:
                greys = [fit[k].grey for k in picks]
                if pseudo:
                    for j in range(round(batch * PSEUDO_SHARE)):
                        i, label = pseudo[rng.randrange(len(pseudo))]
                        greys[j], labels[j] = spare[i], label
                x, frames = pixel_batch(greys, rng)
                if lines:  # strokes in the image's own grey, which the curve then sees
                    x = strike_lines(x, gen)
                if net.tone is not None:  # the curve first, then the augmentation
                    x = net.tone(x)
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    out = net(augment(x, gen), tone=False)
                logp = out.float().log_softmax(2)
            flat = [c for label in labels for c in label]
            loss = ctc(logp, torch.tensor(flat, dtype=torch.long),
                       torch.tensor(frames, dtype=torch.long),
                       torch.tensor([len(label) for label in labels], dtype=torch.long))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            nn.utils.clip_grad_norm_(params, 5.0)
            opt.step()
            step += 1
            if average and frac >= AVERAGE_FROM:
                with torch.no_grad():
                    if not averaged:
                        averaged = [p.detach().clone() for p in params]
                    else:
                        torch._foreach_lerp_(averaged, [p.detach() for p in params],
                                             1.0 - AVERAGE_DECAY)
            value = float(loss.item())
            ema = value if math.isnan(ema) else 0.95 * ema + 0.05 * value
            now = clock()
            if now - last_print >= MODULE_PROGRESS_EVERY_S:
                last_print = now
                progress(f"step {step}: loss {ema:.3f}, lr {rate:.1e},"
                         f" {now - started:.0f}s of {budget:.0f}s")
        end_acc = held_accuracy(net, held, charset, spec)
        progress(f"held-out accuracy after training: {end_acc:.3f}")
        if averaged:
            last = [p.detach().clone() for p in params]
            with torch.no_grad():
                for p, a in zip(params, averaged, strict=True):
                    p.copy_(a)
            avg_acc = held_accuracy(net, held, charset, spec)
            average_kept = avg_acc >= end_acc
            progress(f"held-out accuracy of the weights' moving average: {avg_acc:.3f}"
                     f" ({'kept' if average_kept else 'left out'})")
            if not average_kept:
                with torch.no_grad():
                    for p, w in zip(params, last, strict=True):
                        p.copy_(w)
        if net.tone is not None:
            curve = net.tone.knots.detach().clamp(0, 1).mul(255).round().int().tolist()
            progress("learnt tone curve (grey 0, 4, 8, ... 256 ->): "
                     + " ".join(map(str, curve)))
        set_channels_last(net, on=False)
        return step, average_kept, len(pseudo), end_acc

    results: dict[int, tuple[DdddNet, tuple[int, bool, int, float]]] = {}
    stop = threading.Event()  # set when a lane fails: the others stop at their next step

    def lane_progress(k: int) -> Progress:
        return lambda line: progress(f"network {k + 1}: {line}")

    def run_lane(ks: list[int]) -> None:
        """Train networks ``ks`` one after the other, each from the base for an equal
        share of what is left of the budget, each taught by the lane's ones before it;
        if anything fails, the other lanes stop too."""
        try:
            chain: list[DdddNet] = []
            for at, k in enumerate(ks):
                if stop.is_set():
                    return
                if k:  # a further network: from the base again, its own batches and
                    # augmentation
                    member = base_network(base_model, base_charset, charset, base_label)
                    if tone and member.tone is None:
                        member.tone = Tone()
                    member_rng, member_gen = random.Random(seed + k), torch.Generator(
                        ).manual_seed(seed + k)
                else:
                    member, member_rng, member_gen = net, rng, gen
                # the lanes' lines interleave: each says whose it is
                say = progress if lanes == 1 else lane_progress(k)
                if members > 1:
                    progress(f"network {k + 1} of {members}"
                             + (f" (lane {ks[0] + 1})" if lanes > 1 else ""))
                member_budget = max(1.0, (budget - (clock() - started)) / (len(ks) - at))
                results[k] = member, fit_one(member, member_rng, member_gen, list(chain),
                                             member_budget, say)
                chain.append(member)
        except BaseException:
            stop.set()
            raise

    chains = [list(range(j, members, lanes)) for j in range(lanes)]
    if lanes == 1:
        run_lane(chains[0])
    else:  # each lane on its share of the threads (torch's ops release the GIL)
        torch.set_num_threads(max(1, threads // lanes))
        try:
            with ThreadPoolExecutor(max_workers=lanes, thread_name_prefix="capd-lane"
                                    ) as pool:
                running = [pool.submit(run_lane, chain) for chain in chains]
                try:
                    for done in as_completed(running):
                        done.result()  # (a lane's error is raised here, the first first)
                except BaseException:  # (Ctrl-C too: the lanes stop rather than run on)
                    stop.set()
                    raise
        finally:
            torch.set_num_threads(threads)
    nets = [results[k][0] for k in range(members)]
    member_steps = [results[k][1][0] for k in range(members)]
    average_kept = any(results[k][1][1] for k in range(members))
    pseudo_kept = results[members - 1][1][2]
    end_acc = max(results[k][1][3] for k in range(members))  # (together: on export)
    trained: nn.Module = nets[0] if len(nets) == 1 else Ensemble(nets)
    train_s = clock() - started
    if keep_best and end_acc < start_acc:
        # too few steps (a short budget, a busy machine) can leave the network worse
        # than where it started: the base's weights are the better module then
        progress("training did not beat the base on the held-out images: keeping the"
                 " base's weights")
        net.load_state_dict(start_weights)
        trained, nets = net, [net]
    step = sum(member_steps)
    progress(f"trained {step} steps ({step * batch} images) in {train_s:.0f}s; exporting")

    trained.eval()
    manifest: dict[str, Any] = {
        "name": name, "charset": charset, "input_height": 64,
        "case_sensitive": spec.case_sensitive, "numeric": spec.numeric,
        "samples": len(samples), "train_samples": len(fit), "held_out": len(held),
        "base": base_label, "freeze": freeze, "steps": step, "train_seconds": round(train_s, 1),
        "grey": grey, "stretch": stretch, "tone": net.tone is not None,
        "strokes": lines, "averaged": average_kept, "members": len(nets),
        "member_steps": member_steps[:len(nets)], "lanes": lanes if len(nets) > 1 else 1,
        "precision": "bfloat16" if bf16 else "float32",
        "unlabelled": len(spare), "pseudo_labelled": pseudo_kept,
        "created_at": time.time(),
    }
    with tempfile.TemporaryDirectory(prefix="capd-module-") as tmp:
        fp32_path, int8_path = os.path.join(tmp, "fp32.onnx"), os.path.join(tmp, "int8.onnx")
        fp32, int8 = _export(trained, fp32_path, int8_path)
    acc_f, pairs_f = score(ModuleEngine(Module(manifest, fp32)), held, spec)
    acc_q, pairs_q = score(ModuleEngine(Module(manifest, int8)), held, spec)
    use_int8 = acc_q >= acc_f - max(MAX_INT8_DROP, 1.0 / len(held))
    model = int8 if use_int8 else fp32
    progress(f"held-out accuracy float32 {acc_f:.3f}, int8 {acc_q:.3f}: shipping"
             f" {'int8' if use_int8 else 'float32'} ({len(model) / 1e6:.1f} MB)")
    accuracy = acc_q if use_int8 else acc_f
    xs, ys = fit_isotonic(pairs_q if use_int8 else pairs_f)

    rest = b""

    def keep_if_no_loss(field: str, value: Any, what: str,
                        models: tuple[bytes, bytes] | None = None) -> None:
        """Score the module read with this manifest field (and these models, the first
        networks' and the rest's); keep the field when it reads at least as many held-out
        images right, the calibration then fitted anew."""
        nonlocal accuracy, xs, ys, model, rest
        trial = Module({**manifest, field: value}, *(models or (model, rest)))
        acc, pairs = score(ModuleEngine(trial), held, spec)
        kept = acc >= accuracy
        progress(f"held-out accuracy with {what}: {acc:.3f} ({'kept' if kept else 'left out'})")
        if kept:
            manifest[field] = value
            model, rest = trial.model, trial.rest
            accuracy = acc
            xs, ys = fit_isotonic(pairs)

    # a second look at unsure readings (the image read again, wider), its trigger from the
    # calibration of single readings (not for several networks, which read otherwise)
    if len(nets) == 1:
        look = {"below": round(Calibration(xs, ys).raw_reaching(SECOND_LOOK_AT), 6),
                "stretch": SECOND_LOOK_STRETCH}
        keep_if_no_loss("second_look", look, "a second look at unsure readings")
    # a vote of several widths on unsure readings (it supersedes the second look where
    # kept; a capd older than it reads the module with the second look)
    keep_if_no_loss("vote", {"below": VOTE_BELOW, "stretches": list(VOTE_STRETCHES)},
                    f"a vote of {len(VOTE_STRETCHES) + 1} widths on unsure readings")
    # answers as long as the training labels: a reading of another length (a character
    # dropped where two crowd, noise read as one) is replaced by the likeliest reading of
    # a length seen in training
    if lengths[1] <= MAX_LABEL_LENGTH:
        keep_if_no_loss("lengths", list(lengths),
                        f"answers of {lengths[0]}-{lengths[1]} characters, as in training")
    # the first networks read first, the rest only when these disagree or are unsure
    if len(nets) > FIRST_MEMBERS:
        keep_if_no_loss("first_members", FIRST_MEMBERS,
                        f"networks 1-{FIRST_MEMBERS} reading first",
                        split_members(model, FIRST_MEMBERS))
    manifest.update({
        "weights": "int8 (dynamic)" if use_int8 else "float32",
        "accuracy": round(accuracy, 4),
        "calibration": {"raw": [round(x, 6) for x in xs],
                        "calibrated": [round(y, 6) for y in ys],
                        "fitted_on": f"{len(held)} held-out images"},
    })
    if general is not None:
        general_name, engine = general
        progress(f"reading the held-out images with the general engine ({general_name})")
        manifest["general_engine"] = general_name
        manifest["general_accuracy"] = round(score(engine, held, spec)[0], 4)
    manifest["peak_memory_mb"] = round(peak_memory_mb())
    data = pack(manifest, model, rest)
    return Outcome(data, unpack(data).manifest)


def split_members(model: bytes, first: int) -> tuple[bytes, bytes]:
    """A module's ONNX graph of several networks (one output each) as two graphs: the
    first ``first`` networks' and the others' (ONNX Runtime computes every output of a
    graph, whichever are asked for)."""
    import onnx
    from onnx.utils import Extractor

    graph = onnx.load_model_from_string(model)
    inputs = [i.name for i in graph.graph.input]
    outputs = [o.name for o in graph.graph.output]
    extractor = Extractor(graph)
    return (extractor.extract_model(inputs, outputs[:first]).SerializeToString(),
            extractor.extract_model(inputs, outputs[first:]).SerializeToString())


def _export(net: nn.Module, fp32_path: str, int8_path: str) -> tuple[bytes, bytes]:
    """The float32 ONNX file and its dynamically quantised int8 version."""
    import logging
    import warnings

    from onnxruntime.quantization import QuantType, quantize_dynamic

    with warnings.catch_warnings():
        # the exporter's notes are not the operator's business: the LSTM batch-size note
        # (the engine runs one image at a time), the tracer's notes on the LSTM's shape
        # checks, and the TorchScript exporter's deprecation (the same exporter as
        # training/export_finetuned.py, whose files the engines are known to run)
        warnings.simplefilter("ignore")
        # one output per network: "logits" (the first, all a capd older than members
        # reads), then "logits_1", ...
        count = len(net.members) if isinstance(net, Ensemble) else 1
        outputs = ["logits", *(f"logits_{k}" for k in range(1, count))]
        torch.onnx.export(net, (torch.rand(1, 1, 64, 160),), fp32_path,
                          input_names=["image"], output_names=outputs,
                          dynamic_axes={"image": {0: "batch", 3: "width"},
                                        **{name: {0: "frames", 1: "batch"}
                                           for name in outputs}},
                          opset_version=17, dynamo=False)
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)  # the quantiser's advice to pre-process, on every run
    import onnx

    # a learnt grey curve (Tone; an Ensemble's members' "members.K.tone.knots") stays
    # float: its Gathers would be quantised too
    keep_float = [n.name for n in onnx.load(fp32_path).graph.node
                  if any(name.endswith(TONE_KNOTS) for name in n.input)]
    try:
        quantize_dynamic(fp32_path, int8_path, weight_type=QuantType.QUInt8,
                         nodes_to_exclude=keep_float)
    finally:
        root.setLevel(level)
    return Path(fp32_path).read_bytes(), Path(int8_path).read_bytes()


def base_from_module(module: Module, version: int) -> tuple[bytes, list[str], str]:
    return module.model, module.charset, f"module {module.name} v{version}"

