"""Which bytes are a readable image (issue 12): the checks createTask applies to the
images capd reads itself, before any pixel is decoded where the header already tells."""

from __future__ import annotations

import io
import random

import pytest
from PIL import Image

from capd.constants import MAX_IMAGE_PIXELS
from capd.domain.images import check_image
from capd.errors import CapdError
from tests.helpers import captcha_png, image_as, png_bomb, png_of_size

PNG = captcha_png("ab12")


def refusal(data: bytes) -> str:
    with pytest.raises(CapdError) as caught:
        check_image(data)
    assert caught.value.code == "ERROR_ZERO_CAPTCHA_FILESIZE"
    return str(caught.value.detail)


def test_random_bytes_are_refused() -> None:
    refusal(random.Random(12).randbytes(200))


def test_truncated_png_is_refused() -> None:
    assert "truncated" in refusal(PNG[: len(PNG) // 2])


def test_png_with_a_corrupt_row_stream_is_refused() -> None:
    start = PNG.index(b"IDAT") + 8
    damaged = PNG[:start] + bytes(64) + PNG[start + 64:]
    refusal(damaged)


def test_png_bomb_is_refused_from_its_header() -> None:
    bomb = png_bomb(100_000, 100_000)
    assert len(bomb) < 200
    assert "pixels" in refusal(bomb)


def test_valid_png_over_the_pixel_cap_is_refused() -> None:
    side = int(MAX_IMAGE_PIXELS**0.5) + 1
    out = io.BytesIO()
    Image.new("1", (side, side), 1).save(out, "PNG", optimize=True)
    assert len(out.getvalue()) < 51_200  # small enough to pass the size rule
    assert "pixels" in refusal(out.getvalue())


def test_format_outside_the_list_is_refused() -> None:
    # EPS: Pillow would hand it to Ghostscript, an outside program
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\n" + b"% pad\n" * 20
    refusal(eps)


def test_empty_declared_size_is_refused() -> None:
    refusal(png_bomb(0, 10))


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "GIF", "BMP", "WEBP", "TIFF"])
def test_valid_image_of_each_format_is_accepted(fmt: str) -> None:
    check_image(image_as(fmt))


def test_png_with_ancillary_chunks_is_accepted() -> None:
    check_image(png_of_size(100))
