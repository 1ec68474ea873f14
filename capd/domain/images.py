"""Whether image bytes are a picture capd can read (issue 12): checked at createTask,
so that bytes that are no image are refused there with ERROR_ZERO_CAPTCHA_FILESIZE
instead of failing later as ERROR_CAPTCHA_UNSOLVABLE.

Pure (no I/O beyond the bytes given) but not free: a full decode costs up to
MAX_IMAGE_PIXELS pixels of work, so callers on an event loop run ``check_image`` in a
thread. The header is read first (Pillow opens lazily): the format must be one of
IMAGE_FORMATS and the declared size within MAX_IMAGE_PIXELS before a single pixel is
decoded, so a decompression bomb (a tiny file claiming huge dimensions) costs nothing.
"""

from __future__ import annotations

import io

from PIL import Image, UnidentifiedImageError

from capd.constants import IMAGE_FORMATS, MAX_IMAGE_PIXELS
from capd.errors import CapdError

UNREADABLE = "ERROR_ZERO_CAPTCHA_FILESIZE"


def open_checked(data: bytes) -> Image.Image:
    """The decoded image (pixels loaded), or UnreadableImageError: not one of
    IMAGE_FORMATS, an empty or over-MAX_IMAGE_PIXELS size, truncated or corrupt."""
    try:
        img = Image.open(io.BytesIO(data), formats=IMAGE_FORMATS)
        width, height = img.size
        if width < 1 or height < 1:
            raise UnreadableImageError(f"empty {width}x{height} image")
        if width * height > MAX_IMAGE_PIXELS:
            raise UnreadableImageError(f"{width}x{height} is over {MAX_IMAGE_PIXELS} pixels")
        img.load()
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError, EOFError,
            Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise UnreadableImageError(str(exc) or type(exc).__name__) from None
    return img


class UnreadableImageError(Exception):
    """Image bytes that are not a picture capd reads."""


def check_image(data: bytes, name: str = "body") -> None:
    """Refuse (ERROR_ZERO_CAPTCHA_FILESIZE naming the field) bytes that do not decode as
    a picture within the bounds of ``open_checked``."""
    try:
        open_checked(data)
    except UnreadableImageError as exc:
        raise CapdError(UNREADABLE, f"'{name}' is not a readable image: {exc}") from None
