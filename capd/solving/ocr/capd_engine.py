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
from PIL import Image

from capd.solving.ocr.onnx_engine import Calibration, CtcEngine, flatten_alpha, onnx_session

__all__ = ["Calibration", "CapdEngine", "CapdWebEngine", "grey_input", "preprocess", "standardise"]

INPUT_HEIGHT = 32
INPUT_WIDTH = 128
# symbols the model may read as another column: the letter x is also "times"
_ALIASES = {"*": "×"}


def grey_input(img: Image.Image) -> np.ndarray:
    """PIL image -> (32, 128) uint8 grey, transparency flattened onto white. Training
    caches exactly these pixels (training/gen.py imports this)."""
    gray = flatten_alpha(img).convert("L").resize((INPUT_WIDTH, INPUT_HEIGHT),
                                                  Image.Resampling.BILINEAR)
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


class CapdEngine(CtcEngine):
    """capd's CRNN with task-aware masked CTC decoding and calibrated confidence."""

    name = "capd"
    case_aware = True
    model_file = "capd_crnn.onnx"
    calibration_file = "calibration.json"

    def __init__(self, model: bytes | None = None, calibrate: bool = True) -> None:
        pkg = resources.files("capd.solving.ocr").joinpath("models")
        if model is None:
            model = pkg.joinpath(self.model_file).read_bytes()
        meta = json.loads(pkg.joinpath("charset.json").read_text())
        self._session = onnx_session(model)
        self._input = self._session.get_inputs()[0].name
        self._charset: list[str] = ["", *meta["charset"]]  # column 0 is the CTC blank
        super().__init__(self._charset, _ALIASES,
                         Calibration.load(self.calibration_file) if calibrate else None)

    @property
    def _calibration(self) -> Calibration | None:
        return self.calibration

    def logits(self, batch: np.ndarray) -> np.ndarray:
        """Raw model output for a (N, 1, 32, 128) batch: (T, N, classes)."""
        return self._session.run(None, {self._input: batch})[0]

    def frames(self, img: Image.Image) -> np.ndarray:
        return self.logits(preprocess(img)[np.newaxis])[:, 0, :]


class CapdWebEngine(CapdEngine):
    """The same CRNN fine-tuned on labelled captchas of real websites as well as the
    synthetic styles (training/finetune_crnn.py): as cheap as ``capd`` (32 x 128 input),
    surer on the real schemes, weaker on the synthetic ones."""

    name = "capd-web"
    model_file = "capd_web.onnx"
    calibration_file = "calibration_capd-web.json"
