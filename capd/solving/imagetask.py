"""What reading one ImageToText task means, shared by the in-process solver and
``capd worker`` processes: the image from the task object, and the outcome of a reading
under the task's threshold (spec §6)."""

from __future__ import annotations

from typing import Any

from capd.domain.tasks import ImageSpec, ValidationRules, decode_image
from capd.errors import CapdError
from capd.solving.ocr.base import Reading

IMAGE_TYPE = "ImageToTextTask"  # the task type the built-in reading serves
UNSOLVABLE = "ERROR_CAPTCHA_UNSOLVABLE"


def image_bytes(task: dict[str, Any], rules: ValidationRules) -> bytes:
    """The image of a task object as the client sent it (b"" when it cannot be had)."""
    try:
        return decode_image(task.get("body", task.get("Body")), rules)
    except CapdError:
        return b""


def image_spec(options: dict[str, Any]) -> ImageSpec:
    return ImageSpec(**options)


def outcome(reading: Reading | None, spec: ImageSpec) -> tuple[dict[str, Any] | None,
                                                                 str | None]:
    """(solution, None) or (None, error code) for a reading (None: unreadable image)."""
    if reading is None or not reading.text:
        return None, UNSOLVABLE
    if spec.threshold is not None and reading.confidence * 100 < spec.threshold:
        return None, UNSOLVABLE
    return {"text": reading.text}, None
