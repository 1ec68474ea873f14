"""What every ONNX CTC engine shares: a one-thread ONNX Runtime session, masked CTC
decoding (post.py), per-character probabilities, and a calibrated confidence.

An engine supplies its model, its output columns' symbols and its pixels; this module
turns the model's (frames x classes) output into a Reading.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from importlib import resources

import numpy as np
import onnxruntime as ort
from PIL import Image

from capd.domain.tasks import ImageSpec
from capd.solving.ocr.base import Reading, open_image
from capd.solving.ocr.post import MaskedDecoder, evaluate_expression


def onnx_session(model: bytes) -> ort.InferenceSession:
    """A CPU session running one inference on one thread: the OCR pool runs one
    inference per core instead."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    return ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])


def flatten_alpha(img: Image.Image) -> Image.Image:
    """Transparency composited onto white (many captchas are drawn on a clear canvas)."""
    if img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info):
        rgba = img.convert("RGBA")
        flat = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        flat.alpha_composite(rgba)
        return flat.convert("RGB")
    return img


class Calibration:
    """Piecewise-linear, non-decreasing map from raw CTC confidence (the product of the
    per-character probabilities) to the probability that the answer is right (isotonic
    regression knots fitted on held-out captchas, training/evaluate_real.py)."""

    def __init__(self, xs: Sequence[float], ys: Sequence[float]) -> None:
        self.xs = np.asarray(xs, dtype=np.float64)
        self.ys = np.asarray(ys, dtype=np.float64)

    def __call__(self, raw: float) -> float:
        if raw <= 0.0:
            return 0.0
        return float(np.clip(np.interp(raw, self.xs, self.ys), 0.0, 1.0))

    def raw_reaching(self, level: float) -> float:
        """The smallest raw confidence this map sends to ``level`` or above (1.0 when it
        never gets there): where a second look at unsure readings starts."""
        xs, ys = self.xs.tolist(), self.ys.tolist()
        for k, (x, y) in enumerate(zip(xs, ys, strict=True)):
            if y >= level:
                if k == 0:
                    return float(x)
                x0, y0 = xs[k - 1], ys[k - 1]
                return float(x0 + (x - x0) * (level - y0) / (y - y0))
        return 1.0

    @classmethod
    def load(cls, filename: str) -> Calibration | None:
        """The calibration shipped in models/ under ``filename``; None when there is none
        (the engine then reports its raw confidence)."""
        path = resources.files("capd.solving.ocr").joinpath("models", filename)
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        return cls(data["raw"], data["calibrated"])


class CtcEngine:
    """Base of the ONNX CTC engines. Subclasses set ``name`` and implement ``frames``."""

    name = "ctc"

    def __init__(self, charset: Sequence[str], aliases: dict[str, str] | None = None,
                 calibration: Calibration | None = None) -> None:
        self._decoder = MaskedDecoder(charset, aliases)
        self.calibration = calibration

    def frames(self, img: Image.Image) -> np.ndarray:
        """The model's (frames x classes) scores for one image: logits, or
        log-probabilities (only differences between columns count)."""
        raise NotImplementedError

    def read(self, image: bytes, spec: ImageSpec) -> Reading:
        text, chars = self._decoder.decode_chars(self.frames(open_image(image)), spec)
        return self.finish(text, chars, spec)

    def finish(self, text: str, chars: tuple[float, ...], spec: ImageSpec) -> Reading:
        """The Reading of a decoded text: calibrated confidence, math evaluated."""
        raw = float(np.prod(chars)) if text else 0.0
        confidence = self.calibration(raw) if self.calibration else raw
        if spec.math:
            answer = evaluate_expression(text)
            return Reading(answer or "", confidence if answer else 0.0, chars)
        return Reading(text, confidence if text else 0.0, chars)
