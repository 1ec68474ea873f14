"""ddddocr's two bundled recognition models, run with our own decoder.

We load the model files and charsets that ship inside the ddddocr package (1.6) and run
them with ONNX Runtime directly, so that the task's alphabet (numeric, case, math) can be
enforced by masking the CTC output rather than deleting characters afterwards, and so
that per-character probabilities give a confidence.

- ``ddddocr``: ``common_old.onnx`` with ``CHARSET_OLD``, what ``DdddOcr()`` loads by
  default (and with ``old=True``).
- ``ddddocr-beta``: ``common.onnx`` with ``CHARSET_BETA``, what ``DdddOcr(beta=True)``
  loads.

Both take the image as grey, 64 pixels high, width scaled to keep the aspect ratio,
values in [0, 1] (ddddocr's own preprocessing), and output logits per frame.

Case (issue 14: "k7Pm3" sent with case:true came back "k7pm3"): neither model knows
case well. The default model answers lower case for most capitals (on the held-out
Amazon captchas, all capitals, 3% of its case:true answers were right against 83%
case-insensitively); both miss most where a capital has its small letter's shape (c k
o p s u v w x z). The decoder is not at fault: both cases are in the charsets, the
mask keeps both, and the model itself scores the wrong case higher. So for
case-sensitive tasks the letters take their case from capd's CRNN wherever the two
readings align (post.recase; ~2 ms more on a quiet core, only when a letter was read).
``case_aware`` is False for these engines: the combined engine prefers other engines'
spelling.
"""

from __future__ import annotations

from importlib import resources

import numpy as np
from PIL import Image

from capd.domain.tasks import ImageSpec
from capd.solving.ocr.base import Reading, Recogniser, open_image
from capd.solving.ocr.onnx_engine import Calibration, CtcEngine, flatten_alpha, onnx_session
from capd.solving.ocr.post import recase

INPUT_HEIGHT = 64
MAX_INPUT_WIDTH = 2048


class DdddOcrEngine(CtcEngine):
    """ddddocr 1.6's default ("old") recogniser with task-aware CTC decoding."""

    name = "ddddocr"
    model_file = "common_old.onnx"
    case_aware = False

    def __init__(self, calibrate: bool = True, restore_case: bool = True,
                 case_reader: Recogniser | None = None) -> None:
        """``case_reader``: the engine whose case wins for same-shape letters (default:
        capd's CRNN); ``restore_case=False`` answers the model's own case."""
        from ddddocr import charsets

        from capd.solving.ocr.capd_engine import CapdEngine

        charset = charsets.CHARSET_BETA if self.model_file == "common.onnx" \
            else charsets.CHARSET_OLD
        model = resources.files("ddddocr").joinpath(self.model_file).read_bytes()
        self._session = onnx_session(model)
        self._input = self._session.get_inputs()[0].name
        calibration = Calibration.load(f"calibration_{self.name}.json") if calibrate else None
        super().__init__(list(charset), calibration=calibration)
        self._case_reader: Recogniser | None = None
        if restore_case:
            self._case_reader = case_reader or CapdEngine(calibrate=False)

    def _pixels(self, img: Image.Image) -> np.ndarray:
        width, height = img.size
        target_w = max(1, min(MAX_INPUT_WIDTH, round(width * INPUT_HEIGHT / height)))
        gray = img.resize((target_w, INPUT_HEIGHT), Image.Resampling.LANCZOS).convert("L")
        arr = np.asarray(gray, dtype=np.float32) / 255.0
        return arr[np.newaxis, np.newaxis, :, :]

    def frames(self, img: Image.Image) -> np.ndarray:
        logits = self._session.run(None, {self._input: self._pixels(flatten_alpha(img))})[0]
        return logits.reshape(logits.shape[0], -1)  # (T, C)

    def read(self, image: bytes, spec: ImageSpec) -> Reading:
        text, chars = self._decoder.decode_chars(self.frames(open_image(image)), spec)
        if self._case_reader is not None and spec.case_sensitive and not spec.math \
                and spec.numeric != 1 and any(c.isalpha() for c in text):
            text = recase(text, self._case_reader.read(image, spec).text)
        return self.finish(text, chars, spec)


class DdddOcrBetaEngine(DdddOcrEngine):
    """ddddocr 1.6's beta recogniser (``DdddOcr(beta=True)``)."""

    name = "ddddocr-beta"
    model_file = "common.onnx"
