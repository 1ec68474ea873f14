"""PP-OCR's small text-line recogniser, as shipped inside the ``rapidocr`` wheel (3.x),
run with ONNX Runtime and capd's masked CTC decoder.

Model: ``rapidocr/models/PP-OCRv6_rec_small.onnx`` read from the installed package
(nothing is downloaded; the rest of rapidocr, detection included, is not used). Its
output columns' symbols are stored in the model's own metadata (``character``), with the
CTC blank before them and a space after them, as rapidocr arranges them.

Licence of the weights: Apache-2.0. They are PaddleOCR's PP-OCRv6_small_rec model
(copyright Baidu and/or the PaddleOCR rights holders), converted to ONNX and packaged by
RapidOCR under the same Apache-2.0 terms (the wheel's MODEL_LICENSES.md). capd does not
redistribute the file; it loads it from the rapidocr installation.

Input: the image as BGR, 48 pixels high, width scaled to keep the aspect ratio (at least
as wide as high), values in [-1, 1], zero-padded on the right to 320 pixels. Output:
softmax probabilities per frame, passed on to the decoder as log-probabilities.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
from PIL import Image

from capd.errors import ConfigError
from capd.solving.ocr.onnx_engine import Calibration, CtcEngine, flatten_alpha, onnx_session

MODEL_FILE = "PP-OCRv6_rec_small.onnx"
INPUT_HEIGHT = 48
MAX_INPUT_WIDTH = 1600
PADDED_WIDTH = 320  # narrower lines are padded with zeros to this width, as rapidocr does
_ALIASES = {"*": "×"}


def model_path() -> Path:
    """The rec model inside the installed rapidocr package (without importing it)."""
    spec = importlib.util.find_spec("rapidocr")
    if spec is None or not spec.submodule_search_locations:
        raise ConfigError("the 'rapidocr' engine needs the rapidocr package (3.x) installed")
    path = Path(next(iter(spec.submodule_search_locations))) / "models" / MODEL_FILE
    if not path.is_file():
        raise ConfigError(f"rapidocr is installed without its {MODEL_FILE}")
    return path


class RapidOcrEngine(CtcEngine):
    """PP-OCRv6 small recogniser (from rapidocr) with task-aware CTC decoding."""

    name = "rapidocr"
    case_aware = True

    def __init__(self, calibrate: bool = True) -> None:
        self._session = onnx_session(model_path().read_bytes())
        self._input = self._session.get_inputs()[0].name
        keys = self._session.get_modelmeta().custom_metadata_map["character"].splitlines()
        charset = ["", *keys, " "]
        calibration = Calibration.load(f"calibration_{self.name}.json") if calibrate else None
        super().__init__(charset, _ALIASES, calibration)

    def _pixels(self, img: Image.Image) -> np.ndarray:
        rgb = flatten_alpha(img).convert("RGB")
        width, height = rgb.size
        target_w = max(INPUT_HEIGHT, min(MAX_INPUT_WIDTH,
                                         round(width * INPUT_HEIGHT / height)))
        resized = rgb.resize((target_w, INPUT_HEIGHT), Image.Resampling.BILINEAR)
        arr = np.asarray(resized, dtype=np.float32)[:, :, ::-1] / 127.5 - 1.0
        padded = np.zeros((1, 3, INPUT_HEIGHT, max(PADDED_WIDTH, target_w)), np.float32)
        padded[0, :, :, :target_w] = arr.transpose(2, 0, 1)
        return padded

    def frames(self, img: Image.Image) -> np.ndarray:
        probs = self._session.run(None, {self._input: self._pixels(img)})[0][0]  # (T, C)
        return np.log(np.maximum(probs, 1e-12))
