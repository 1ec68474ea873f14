"""The fine-tuned engine: ddddocr's default network (CNN + BiLSTM) fine-tuned on real
captchas with capd's alphabet, run with ONNX Runtime (training/finetune.py builds it).

Input: the image in grey, transparency flattened onto white, resized to 64 pixels high
with its aspect ratio kept, scaled to [0, 1] (what ddddocr's network was trained on).
Output: one column per 8 input columns over the CTC blank + capd's 66 symbols (the
same alphabet as the capd engine, so the same masked decoding: numeric, case folding,
math). The confidence is the CTC path confidence (the product of each read
character's peak probability) mapped through an isotonic calibration fitted on a
calibration slice of real captchas that was neither trained on nor part of the
held-out evaluation split (models/finetuned.json).

Second look: when the first reading's raw confidence is below the level at which half of
such readings are right (``second_look.below`` in models/finetuned.json, fitted with the
calibration), the image is read again stretched to 1.25 times its width (more output
frames per character: narrow or crowded characters are otherwise merged or dropped) and
the more confident of the two readings is kept. The calibration map is fitted on these
final readings, so a threshold keeps its meaning.
"""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageChops, ImageFilter

from capd.domain.tasks import ImageSpec
from capd.solving.ocr.base import Reading, open_image
from capd.solving.ocr.capd_engine import Calibration
from capd.solving.ocr.post import MaskedDecoder, decode_with_second_look, evaluate_expression

INPUT_HEIGHT = 64
MIN_INPUT_WIDTH = 32  # at least 4 output frames
MAX_INPUT_WIDTH = 1024
# the second look: below the raw confidence at which a single reading is right with
# probability SECOND_LOOK_AT (fitted with the calibration), read again this much wider
SECOND_LOOK_AT = 0.5
SECOND_LOOK_STRETCH = 1.25
MODEL_FILE = "finetuned.onnx"
META_FILE = "finetuned.json"
_ALIASES = {"*": "×"}


# how colour becomes grey: "luminance" (PIL's L: a yellow stroke on white is nearly
# white), or "darkest" (each pixel's darkest channel: any saturated colour is dark ink)
GREY_MODES = ("luminance", "darkest")
# text_band: ink differs from the background by more than this; the band is cut only when
# it is under this share of the picture's height, with this share of its height as margin
BAND_INK_DELTA = 60
BAND_MAX_SHARE = 0.45
BAND_MARGIN = 0.3
BAND_COLUMN_INK = 3
BAND_KEPT_INK = 0.4


def text_band(grey: Image.Image) -> tuple[int, int, int, int] | None:
    """(left, top, right, bottom) of the picture's text with a margin, or None when the
    text already fills most of its height (or none is found).

    Ink is whatever differs from the background (the median of the border pixels) by more
    than BAND_INK_DELTA; an opening (3 x 3 minimum, then maximum) leaves out one-pixel stray
    lines and dots, so the rows come from the characters (unless the opening took most of the
    ink: hair-thin characters, which are then left uncut). The columns are those with at least
    BAND_COLUMN_INK ink pixels in those rows, before the opening, so a hair-thin character
    counts while a stray line crossing the band at a slant does not."""
    a = np.asarray(grey, dtype=np.int16)
    height, width = a.shape
    if height < 16 or width < 16:
        return None
    border = np.concatenate((a[0], a[-1], a[:, 0], a[:, -1]))
    ink = np.abs(a - int(np.median(border))) > BAND_INK_DELTA
    mask = Image.fromarray((ink * 255).astype(np.uint8))
    opened = mask.filter(ImageFilter.MinFilter(3)).filter(ImageFilter.MaxFilter(3))
    box = opened.getbbox()
    # hair-thin characters vanish in the opening with the lines: the rows left would not be
    # theirs, so such a picture is not cut
    if box is None or np.count_nonzero(np.asarray(opened)) < BAND_KEPT_INK * ink.sum():
        return None
    top, bottom = box[1], box[3]
    band = bottom - top
    if band >= BAND_MAX_SHARE * height:
        return None
    margin = max(2, round(BAND_MARGIN * band))
    top, bottom = max(0, top - margin), min(height, bottom + margin)
    # a column of a character holds a few pixels of ink in the band, however thin the
    # stroke; a stray line crossing it at a slant holds one or two
    cols = np.flatnonzero(ink[top:bottom].sum(axis=0) >= BAND_COLUMN_INK)
    if cols.size == 0:
        return None
    left = max(0, int(cols[0]) - margin)
    right = min(width, int(cols[-1]) + 1 + margin)
    return left, top, right, bottom


def grey64(img: Image.Image, stretch: float = 1.0, grey: str = "luminance",
           crop: bool = False) -> np.ndarray:
    """PIL image -> (64, W) uint8 grey, aspect ratio kept (times ``stretch`` in width),
    transparency flattened onto white, colour turned grey by ``grey`` (GREY_MODES); with
    ``crop``, small text on a large canvas is cut to its band first (text_band), so it
    reaches the network larger. Training (training/finetune.py) reads images through this
    function."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        flat.alpha_composite(rgba)
        img = flat
    if grey == "darkest" and (len(img.getbands()) > 1 or img.mode == "P"):
        r, g, b = img.convert("RGB").split()
        flat_grey = ImageChops.darker(ImageChops.darker(r, g), b)
    elif grey in GREY_MODES:
        flat_grey = img.convert("L")
    else:
        raise ValueError(f"unknown grey mode {grey!r}")
    if crop and (box := text_band(flat_grey)) is not None:
        flat_grey = flat_grey.crop(box)
    width, height = flat_grey.size
    target_w = max(MIN_INPUT_WIDTH,
                   min(MAX_INPUT_WIDTH, round(width * stretch * INPUT_HEIGHT / height)))
    gray = flat_grey.resize((target_w, INPUT_HEIGHT), Image.Resampling.LANCZOS)
    return np.asarray(gray, dtype=np.uint8)


def shipped_file(name: str) -> bytes:
    """A file of the shipped model (MODEL_FILE, or META_FILE: its metadata)."""
    return resources.files("capd.solving.ocr").joinpath("models").joinpath(name).read_bytes()


def to_input(grey: np.ndarray) -> np.ndarray:
    """uint8 (64, W) -> float32 (1, 1, 64, W) in [0, 1], the network's input."""
    return (grey.astype(np.float32) / 255.0)[np.newaxis, np.newaxis]


class FinetunedEngine:
    """ddddocr's network fine-tuned for capd, masked CTC decoding, calibrated confidence."""

    name = "finetuned"

    def __init__(self, model: bytes | None = None, calibrate: bool = True,
                 second_look: bool = True) -> None:
        if model is None:
            model = shipped_file(MODEL_FILE)
        meta = json.loads(shipped_file(META_FILE))
        opts = ort.SessionOptions()
        # one thread per inference: the pool runs one inference per core instead
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._charset: list[str] = ["", *meta["charset"]]  # column 0 is the CTC blank
        self._calibration: Calibration | None = None
        cal = meta.get("calibration")
        if calibrate and cal:
            self._calibration = Calibration(cal["raw"], cal["calibrated"])
        self._decoder = MaskedDecoder(self._charset, _ALIASES)
        look = meta.get("second_look") if second_look else None
        self._second_below = float(look["below"]) if look else 0.0
        self._second_stretch = float(look["stretch"]) if look else 1.0
        self.grey = str(meta.get("grey", "luminance"))
        if self.grey not in GREY_MODES:
            raise ValueError(f"{META_FILE}: unknown grey mode {self.grey!r}")
        self.crop = bool(meta.get("crop", False))

    def logits(self, image: bytes | Image.Image, stretch: float = 1.0) -> np.ndarray:
        """Raw model output for one image: (T, classes)."""
        img = open_image(image) if isinstance(image, bytes) else image
        grey = grey64(img, stretch, self.grey, self.crop)
        out = self._session.run(None, {self._input: to_input(grey)})[0]
        return out.reshape(out.shape[0], -1)

    def finish(self, text: str, raw: float, spec: ImageSpec,
               chars: tuple[float, ...] = ()) -> Reading:
        confidence = self._calibration(raw) if self._calibration else raw
        if spec.math:
            answer = evaluate_expression(text)
            return Reading(answer or "", confidence if answer else 0.0, chars)
        return Reading(text, confidence if text else 0.0, chars)

    def read(self, image: bytes, spec: ImageSpec) -> Reading:
        img = open_image(image)
        text, chars = decode_with_second_look(
            self._decoder, lambda stretch: self.logits(img, stretch), spec,
            self._second_below, self._second_stretch)
        return self.finish(text, float(np.prod(chars)) if text else 0.0, spec, chars)
