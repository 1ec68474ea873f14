"""The images every compatibility test sends."""

from __future__ import annotations

from tests.helpers import blank_png, captcha_png

TEXT = "aB3k9"  # read exactly by the built-in engine
PNG = captcha_png(TEXT)
TINY = b"\x89PNG\r\n\x1a\n" * 5  # 40 bytes: under the 100-byte minimum
HUGE = b"\x00" * 51_201  # one byte over the 50 KB maximum
BLANK = blank_png()  # a picture with nothing to read: the task fails unsolvable
