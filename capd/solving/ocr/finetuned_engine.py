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
from PIL import Image, ImageChops

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


def grey64(img: Image.Image, stretch: float = 1.0, grey: str = "luminance") -> np.ndarray:
    """PIL image -> (64, W) uint8 grey, aspect ratio kept (times ``stretch`` in width),
    transparency flattened onto white, colour turned grey by ``grey`` (GREY_MODES).
    Training (training/finetune.py) reads images through this function."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        flat.alpha_composite(rgba)
        img = flat
    width, height = img.size
    target_w = max(MIN_INPUT_WIDTH,
                   min(MAX_INPUT_WIDTH, round(width * stretch * INPUT_HEIGHT / height)))
    if grey == "darkest" and (len(img.getbands()) > 1 or img.mode == "P"):
        r, g, b = img.convert("RGB").split()
        flat_grey = ImageChops.darker(ImageChops.darker(r, g), b)
    elif grey in GREY_MODES:
        flat_grey = img.convert("L")
    else:
        raise ValueError(f"unknown grey mode {grey!r}")
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

    def logits(self, image: bytes | Image.Image, stretch: float = 1.0) -> np.ndarray:
        """Raw model output for one image: (T, classes)."""
        img = open_image(image) if isinstance(image, bytes) else image
        out = self._session.run(None, {self._input: to_input(grey64(img, stretch, self.grey))})[0]
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
