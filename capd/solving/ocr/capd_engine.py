"""capd's own text-captcha recogniser: a small CRNN trained on synthetic captchas of
many styles (training/ in the repository), run with ONNX Runtime.

Decoding is masked CTC exactly like the ddddocr engine (numeric, case folding, math);
the confidence is the CTC path confidence mapped through an isotonic calibration fitted
on held-out captchas (models/calibration.json), so that a recognizingThreshold of T
keeps answers of which about T% or more are right.
"""

from __future__ import annotations

import json
from importlib import resources

import numpy as np
import onnxruntime as ort
from PIL import Image

from capd.domain.tasks import ImageSpec
from capd.solving.ocr.base import Reading, open_image
from capd.solving.ocr.post import MaskedDecoder, evaluate_expression

INPUT_HEIGHT = 32
INPUT_WIDTH = 128
# symbols the model may read as another column: the letter x is also "times"
_ALIASES = {"*": "×"}


def grey_input(img: Image.Image) -> np.ndarray:
    """PIL image -> (32, 128) uint8 grey, transparency flattened onto white. Training
    caches exactly these pixels (training/gen.py imports this)."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        flat.alpha_composite(rgba)
        img = flat
    gray = img.convert("L").resize((INPUT_WIDTH, INPUT_HEIGHT), Image.Resampling.BILINEAR)
    return np.asarray(gray, dtype=np.uint8)


def standardise(grey: np.ndarray) -> np.ndarray:
    """uint8 grey (..., 32, 128) -> float32 (..., 1, 32, 128), per-image zero mean and
    unit deviation (floored), the network's input."""
    arr = grey.astype(np.float32) / 255.0
    mean = arr.mean(axis=(-2, -1), keepdims=True)
    std = np.maximum(arr.std(axis=(-2, -1), keepdims=True), 0.05)
    return ((arr - mean) / std)[..., np.newaxis, :, :]


def preprocess(img: Image.Image) -> np.ndarray:
    """PIL image -> (1, 32, 128) float32, the network's input. Shared with training
    (training/ imports it), so both see identical pixels."""
    return standardise(grey_input(img))


class Calibration:
    """Piecewise-linear, non-decreasing map from raw CTC confidence to the probability
    that the answer is right (isotonic regression knots)."""

    def __init__(self, xs: list[float], ys: list[float]) -> None:
        self.xs = np.asarray(xs, dtype=np.float64)
        self.ys = np.asarray(ys, dtype=np.float64)

    def __call__(self, raw: float) -> float:
        if raw <= 0.0:
            return 0.0
        return float(np.clip(np.interp(raw, self.xs, self.ys), 0.0, 1.0))


class CapdEngine:
    """capd's CRNN with task-aware masked CTC decoding and calibrated confidence."""

    name = "capd"

    def __init__(self, model: bytes | None = None, calibrate: bool = True) -> None:
        pkg = resources.files("capd.solving.ocr").joinpath("models")
        if model is None:
            model = pkg.joinpath("capd_crnn.onnx").read_bytes()
        meta = json.loads(pkg.joinpath("charset.json").read_text())
        opts = ort.SessionOptions()
        # one thread per inference: the pool runs one inference per core instead
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._charset: list[str] = ["", *meta["charset"]]  # column 0 is the CTC blank
        self._calibration: Calibration | None = None
        if calibrate:
            cal = json.loads(pkg.joinpath("calibration.json").read_text())
            self._calibration = Calibration(cal["raw"], cal["calibrated"])
        self._decoder = MaskedDecoder(self._charset, _ALIASES)

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Raw model output for a (N, 1, 32, 128) batch: (T, N, classes)."""
        return self._session.run(None, {self._input: batch})[0]

    def decode(self, frames: np.ndarray, spec: ImageSpec) -> tuple[str, float]:
        """Masked greedy CTC over one image's (T, classes) logits: text, raw confidence."""
        return self._decoder.decode(frames, spec)

    def finish(self, text: str, raw: float, spec: ImageSpec) -> Reading:
        confidence = self._calibration(raw) if self._calibration else raw
        if spec.math:
            answer = evaluate_expression(text)
            return Reading(answer or "", confidence if answer else 0.0)
        return Reading(text, confidence if text else 0.0)

    def read(self, image: bytes, spec: ImageSpec) -> Reading:
        pixels = preprocess(open_image(image))[np.newaxis]
        frames = self.logits(pixels)[:, 0, :]
        text, raw = self.decode(frames, spec)
        return self.finish(text, raw, spec)
