"""The first engine: ddddocr's bundled recognition model, run with our own decoder.

We load the model file and charset that ship inside the ddddocr package and run them
with ONNX Runtime directly, so that the task's alphabet (numeric, case, math) can be
enforced by masking the CTC output rather than deleting characters afterwards, and so
that per-character probabilities give a confidence.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
import onnxruntime as ort
from PIL import Image

from capd.domain.tasks import ImageSpec
from capd.solving.ocr.base import Reading, open_image
from capd.solving.ocr.post import MaskedDecoder, evaluate_expression

INPUT_HEIGHT = 64
MAX_INPUT_WIDTH = 2048


class DdddOcrEngine:
    """ddddocr 1.6's default ("old") recogniser with task-aware CTC decoding."""

    name = "ddddocr"

    def __init__(self) -> None:
        from ddddocr.charsets import CHARSET_OLD

        model = resources.files("ddddocr").joinpath("common_old.onnx").read_bytes()
        opts = ort.SessionOptions()
        # one thread per inference: the pool runs one inference per core instead
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        self._session = ort.InferenceSession(model, opts, providers=["CPUExecutionProvider"])
        self._input = self._session.get_inputs()[0].name
        self._decoder = MaskedDecoder(list(CHARSET_OLD))

    def _pixels(self, image: bytes) -> np.ndarray:
        img = open_image(image)
        width, height = img.size
        target_w = max(1, min(MAX_INPUT_WIDTH, round(width * INPUT_HEIGHT / height)))
        gray = img.resize((target_w, INPUT_HEIGHT), Image.Resampling.LANCZOS).convert("L")
        arr = np.asarray(gray, dtype=np.float32) / 255.0
        return arr[np.newaxis, np.newaxis, :, :]

    def read(self, image: bytes, spec: ImageSpec) -> Reading:
        pixels = self._pixels(image)
        logits = self._session.run(None, {self._input: pixels})[0]
        frames = logits.reshape(logits.shape[0], -1)  # (T, C)
        text, confidence = self._decoder.decode(frames, spec)
        if spec.math:
            answer = evaluate_expression(text)
            return Reading(answer or "", confidence if answer else 0.0)
        return Reading(text, confidence)
