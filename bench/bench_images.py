"""createTask's image check (issue 12): what refusing unreadable images costs per image.

Prints the time ``capd.domain.images.check_image`` takes (best and median of N runs) for
a typical captcha, for the largest pictures under the pixel cap that fit the 50 KB size
limit (a flat PNG and a JPEG: the worst a client can make capd decode), and for refused
inputs (random bytes, a truncated PNG, a decompression bomb declaring 100,000 x 100,000
pixels). createTask runs the check in a thread, off the event loop. Run:

    PYTHONPATH=. python bench/bench_images.py [N]
"""

from __future__ import annotations

import contextlib
import io
import random
import sys
import time
import zlib
from collections.abc import Callable

from PIL import Image, ImageDraw

from capd.constants import MAX_IMAGE_BYTES, MAX_IMAGE_PIXELS
from capd.domain.images import check_image
from capd.errors import CapdError


def saved(img: Image.Image, fmt: str, **options: object) -> bytes:
    out = io.BytesIO()
    img.save(out, fmt, **options)
    return out.getvalue()


def bomb(side: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(
            4, "big")
    header = side.to_bytes(4, "big") * 2 + bytes([8, 0, 0, 0, 0])
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header)
            + chunk(b"IDAT", zlib.compress(bytes(4096))) + chunk(b"IEND", b""))


def timed(check: Callable[[], None], runs: int) -> tuple[float, float]:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        with contextlib.suppress(CapdError):
            check()
        times.append(time.perf_counter() - start)
    times.sort()
    return times[0] * 1e3, times[len(times) // 2] * 1e3


def main() -> None:
    runs = int(sys.argv[1]) if len(sys.argv) > 1 else 20
    captcha = Image.new("RGB", (200, 70), "white")
    ImageDraw.Draw(captcha).text((20, 25), "aB3k9", fill="black")
    side = int(MAX_IMAGE_PIXELS ** 0.5)
    png = saved(captcha, "PNG")
    cases = {
        "captcha 200x70 PNG": png,
        f"flat {side}x{side} PNG": saved(Image.new("RGB", (side, side), "white"), "PNG",
                                        optimize=True),
        f"flat {side}x{side} JPEG": saved(Image.new("L", (side, side), 255), "JPEG"),
        "random bytes (refused)": random.Random(1).randbytes(2000),
        "truncated PNG (refused)": png[: len(png) // 2],
        "bomb 100000x100000 (refused)": bomb(100_000) + bytes(32),
    }
    print(f"check_image, {runs} runs each (pixel cap {MAX_IMAGE_PIXELS:,},"
          f" size cap {MAX_IMAGE_BYTES:,} B)")
    for name, data in cases.items():
        best, median = timed(lambda data=data: check_image(data), runs)  # type: ignore[misc]
        print(f"  {name:32} {len(data):>7,} B  best {best:8.3f} ms  median {median:8.3f} ms")


if __name__ == "__main__":
    main()
