"""The first engine: ddddocr's bundled recognition model, run with our own decoder.

We load the model file and charset that ship inside the ddddocr package and run them
with ONNX Runtime directly, so that the task's alphabet (numeric, case, math) can be
enforced by masking the CTC output rather than deleting characters afterwards, and so
that per-character probabilities give a confidence.
"""

from __future__ import annotations

import io
from importlib import resources

import numpy as np
import onnxruntime as ort
from PIL import Image, UnidentifiedImageError

from capd.domain.tasks import ImageSpec
from capd.solving.ocr.base import Reading, UnreadableImage
from capd.solving.ocr.post import alphabet_for, ctc_greedy, evaluate_expression

INPUT_HEIGHT = 64
MAX_INPUT_WIDTH = 2048
MAX_SOURCE_PIXELS = 4_000_000  # a 50 KB PNG can claim huge dimensions; refuse bombs


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
        self._charset: list[str] = list(CHARSET_OLD)
        self._index = {c: i for i, c in enumerate(self._charset)}
        self._columns: dict[tuple[str, bool], tuple[np.ndarray, list[str], np.ndarray | None]] = {}

    def _columns_for(self, alphabet: str, fold_case: bool
                     ) -> tuple[np.ndarray, list[str], np.ndarray | None]:
        """Model columns to keep (blank first), their symbols, and for case folding the
        position of each upper-case column's lower-case partner."""
        key = (alphabet, fold_case)
        cached = self._columns.get(key)
        if cached is not None:
            return cached
        wanted = [c for c in dict.fromkeys(alphabet) if c in self._index]
        extra: list[str] = []
        if fold_case:
            extra = [c.upper() for c in wanted if c.isalpha() and c.upper() in self._index
                     and c.upper() != c]
        symbols = ["", *wanted, *extra]
        cols = np.array([0] + [self._index[c] for c in wanted + extra], dtype=np.int64)
        partner = None
        if extra:
            partner = np.array([symbols.index(c.lower()) for c in extra], dtype=np.int64)
        result = (cols, symbols, partner)
        self._columns[key] = result
        return result

    def _pixels(self, image: bytes) -> np.ndarray:
        try:
            img = Image.open(io.BytesIO(image))
            width, height = img.size
            if width < 1 or height < 1 or width * height > MAX_SOURCE_PIXELS:
                raise UnreadableImage(f"unusable image size {width}x{height}")
            img.load()
        except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError,
                SyntaxError) as exc:
            raise UnreadableImage(str(exc)) from None
        target_w = max(1, min(MAX_INPUT_WIDTH, round(width * INPUT_HEIGHT / height)))
        gray = img.resize((target_w, INPUT_HEIGHT), Image.Resampling.LANCZOS).convert("L")
        arr = np.asarray(gray, dtype=np.float32) / 255.0
        return arr[np.newaxis, np.newaxis, :, :]

    def read(self, image: bytes, spec: ImageSpec) -> Reading:
        pixels = self._pixels(image)
        logits = self._session.run(None, {self._input: pixels})[0]
        frames = logits.reshape(logits.shape[0], -1)  # (T, C)
        fold = not spec.case_sensitive and not spec.math and spec.numeric != 1
        alphabet = alphabet_for(spec)
        cols, symbols, partner = self._columns_for(alphabet, fold)
        sub = frames[:, cols]
        sub = np.exp(sub - sub.max(axis=1, keepdims=True))
        sub /= sub.sum(axis=1, keepdims=True)
        if partner is not None:
            # case-folded decoding: an upper-case letter's probability counts for its
            # lower-case partner, which is the only spelling emitted
            n_extra = len(partner)
            sub[:, partner] += sub[:, -n_extra:]  # partners are distinct columns
            sub = sub[:, :-n_extra]
            symbols = symbols[:-n_extra]
        text, confidence = ctc_greedy(sub, symbols)
        if spec.math:
            answer = evaluate_expression(text)
            return Reading(answer or "", confidence if answer else 0.0)
        return Reading(text, confidence)
