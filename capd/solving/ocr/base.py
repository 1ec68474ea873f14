"""The recogniser interface: image bytes and an ImageSpec in, a Reading out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from PIL import Image

from capd.domain.images import UnreadableImageError, open_checked
from capd.domain.tasks import ImageSpec


class UnreadableImage(Exception):
    """Raised when image bytes cannot be decoded as a picture."""


def open_image(image: bytes) -> Image.Image:
    """Decode image bytes under the rules createTask checks them by
    (``capd.domain.images``: the formats capd reads, refusing decompression bombs)."""
    try:
        return open_checked(image)
    except UnreadableImageError as exc:
        raise UnreadableImage(str(exc)) from None


@dataclass(frozen=True)
class Reading:
    """A recogniser's answer: the text to return and its confidence in [0, 1].

    ``confidence`` is calibrated where the engine has a calibration: about that share of
    answers given with it are right (recognizingThreshold compares with it). ``chars``
    holds the per-character probabilities the answer was decoded with (empty when the
    engine has none; for math, those of the expression read, not of the result).
    """

    text: str
    confidence: float
    chars: tuple[float, ...] = ()


class Recogniser(Protocol):
    name: str

    def read(self, image: bytes, spec: ImageSpec) -> Reading:
        """Read one captcha. Blocking (call it through the OCR pool); thread-safe.

        Honours ``spec.numeric``, ``spec.case_sensitive`` and ``spec.math`` while decoding.
        An empty ``text`` means nothing could be read. Raises UnreadableImage.
        """
        ...
