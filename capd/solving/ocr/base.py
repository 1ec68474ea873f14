"""The recogniser interface: image bytes and an ImageSpec in, a Reading out."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from capd.domain.tasks import ImageSpec


class UnreadableImage(Exception):
    """Raised when image bytes cannot be decoded as a picture."""


@dataclass(frozen=True)
class Reading:
    """A recogniser's answer: the text to return and its confidence in [0, 1]."""

    text: str
    confidence: float


class Recogniser(Protocol):
    name: str

    def read(self, image: bytes, spec: ImageSpec) -> Reading:
        """Read one captcha. Blocking (call it through the OCR pool); thread-safe.

        Honours ``spec.numeric``, ``spec.case_sensitive`` and ``spec.math`` while decoding.
        An empty ``text`` means nothing could be read. Raises UnreadableImage.
        """
        ...
