"""Synthetic text-captcha generator: many styles, deterministic from a seed.

``make_sample(rng, style, fonts)`` returns (PIL RGB image, label, answer). ``label`` is the
drawn text without spaces (what the CTC model should read); ``answer`` is what a solver
must return (the label, or for arithmetic captchas the result).
"""

from __future__ import annotations

import io
import math
import random
import string
from functools import lru_cache

import cv2
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont

STYLES = ("clean", "lines", "dots", "warp", "colour", "overlap", "blurjpeg", "digits",
          "math", "imagecaptcha", "mixed")
# training mixture (the "mixed" style combines every distortion at random)
TRAIN_WEIGHTS = {"clean": 1, "lines": 1.5, "dots": 1, "warp": 1.5, "colour": 1.5,
                 "overlap": 1.5, "blurjpeg": 1, "digits": 1, "math": 1.2,
                 "imagecaptcha": 1.5, "mixed": 4}

ALNUM = string.ascii_letters + string.digits


@lru_cache(maxsize=1024)
def _font(path: str, size: int) -> ImageFont.FreeTypeFont:
    return ImageFont.truetype(path, size)


@lru_cache(maxsize=64)
def _covers(path: str, chars: str) -> bool:
    """Whether a font has real glyphs for chars (not .notdef boxes)."""
    f = _font(path, 24)
    def pix(c: str) -> bytes:
        im = Image.new("L", (40, 40), 0)
        ImageDraw.Draw(im).text((5, 5), c, fill=255, font=f)
        return im.tobytes()

    notdef = pix("\uffff")
    for c in chars:
        b = pix(c)
        if b == notdef or not any(b):
            return False
    return True


def usable_fonts(fonts: list[str]) -> list[str]:
    return [f for f in fonts if _covers(f, "aZq8×=+-")]


# ---------------------------------------------------------------- text choice

def random_text(rng: random.Random, kind: str | None = None) -> str:
    n = rng.randint(3, 8)
    kind = kind or rng.choices(["mixed", "lower", "upper", "letters", "digits"],
                               [5, 3, 2, 1.5, 1.5])[0]
    pool = {"mixed": ALNUM, "lower": string.ascii_lowercase + string.digits,
            "upper": string.ascii_uppercase + string.digits,
            "letters": string.ascii_letters, "digits": string.digits}[kind]
    return "".join(rng.choice(pool) for _ in range(n))


def random_expression(rng: random.Random) -> tuple[str, str, str]:
    """(drawn text with spaces, label, answer)."""
    op = rng.choice("+-x")
    if op == "+":
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        if rng.random() < 0.5:
            a, b = rng.randint(0, 9), rng.randint(0, 9)
        ans = a + b
    elif op == "-":
        a, b = rng.randint(0, 99), rng.randint(0, 99)
        if rng.random() < 0.5:
            a, b = rng.randint(0, 20), rng.randint(0, 9)
        if a < b and rng.random() < 0.8:
            a, b = b, a
        ans = a - b
    else:
        a, b = rng.randint(0, 12), rng.randint(0, 12)
        ans = a * b
    sym = op if op != "x" else rng.choice(["x", "×", "x"])
    sp = rng.choice(["", " ", " ", "  "])
    tail = rng.choice(["=", "=", "= ?", "=?", ""])
    drawn = f"{a}{sp}{sym}{sp}{b}{sp if tail else ''}{tail}".rstrip()
    label = drawn.replace(" ", "").replace("?", "")
    return drawn, label, str(ans)


# ---------------------------------------------------------------- colours / backgrounds

def _lum(c: tuple[int, int, int]) -> float:
    return 0.299 * c[0] + 0.587 * c[1] + 0.114 * c[2]


def _rand_colour(rng: random.Random, lo: int = 0, hi: int = 255) -> tuple[int, int, int]:
    return (rng.randint(lo, hi), rng.randint(lo, hi), rng.randint(lo, hi))


def _contrasting(rng: random.Random, bg_lum: float, min_diff: float = 90
                 ) -> tuple[int, int, int]:
    for _ in range(40):
        c = _rand_colour(rng)
        if abs(_lum(c) - bg_lum) >= min_diff:
            return c
    return (0, 0, 0) if bg_lum > 127 else (255, 255, 255)


def background(rng: random.Random, w: int, h: int, kind: str) -> tuple[Image.Image, float]:
    """A background image and its mean luminance."""
    if kind == "white":
        c = (255, 255, 255) if rng.random() < 0.6 else _rand_colour(rng, 215, 255)
        return Image.new("RGB", (w, h), c), _lum(c)
    if kind == "solid":
        c = _rand_colour(rng, 150, 255) if rng.random() < 0.75 else _rand_colour(rng, 0, 90)
        return Image.new("RGB", (w, h), c), _lum(c)
    if kind == "gradient":
        dark = rng.random() < 0.2
        c1 = _rand_colour(rng, 0, 100) if dark else _rand_colour(rng, 140, 255)
        c2 = _rand_colour(rng, 0, 100) if dark else _rand_colour(rng, 140, 255)
        t = np.linspace(0, 1, w if rng.random() < 0.7 else h, dtype=np.float32)
        grad = np.outer(1 - t, c1) + np.outer(t, c2)  # (n, 3)
        if len(t) == w:
            arr = np.broadcast_to(grad[None, :, :], (h, w, 3))
        else:
            arr = np.broadcast_to(grad[:, None, :], (h, w, 3))
        im = Image.fromarray(np.ascontiguousarray(arr).astype(np.uint8))
        return im, float(_lum(tuple(int(v) for v in (np.array(c1) + c2) / 2)))  # type: ignore[arg-type]
    # texture: blurred coloured noise
    base = np.array(_rand_colour(rng, 120, 255), np.float32)
    nrng = np.random.default_rng(rng.getrandbits(32))
    small = nrng.normal(0, rng.uniform(20, 60), (max(2, h // 6), max(2, w // 6), 3))
    noise = cv2.resize(small.astype(np.float32), (w, h), interpolation=cv2.INTER_CUBIC)
    arr = np.clip(base + noise, 0, 255).astype(np.uint8)
    return Image.fromarray(arr), _lum(tuple(base))  # type: ignore[arg-type]


# ---------------------------------------------------------------- glyph layout

def render_glyphs(rng: random.Random, text: str, fonts: list[str], *, size: int,
                  rot: float, overlap: float, colours: list[tuple[int, int, int]],
                  per_char_font: bool, jitter: float, bold: bool = False) -> Image.Image:
    """Characters drawn one by one (own rotation, colour, baseline jitter), tightly cropped
    onto a transparent RGBA strip."""
    font_path = rng.choice(fonts)
    pieces = []
    for ch in text:
        if ch == " ":
            pieces.append(None)
            continue
        fp = rng.choice(fonts) if per_char_font else font_path
        s = size
        font = _font(fp, s)
        left, top, right, bottom = font.getbbox(ch)
        gw, gh = max(1, right - left) + 8, max(1, bottom - top) + 8
        mask = Image.new("L", (gw, gh), 0)
        ImageDraw.Draw(mask).text((4 - left, 4 - top), ch, fill=255, font=font,
                                  stroke_width=1 if bold else 0, stroke_fill=255)
        ang = rng.uniform(-rot, rot)
        if abs(ang) > 0.5:
            mask = mask.rotate(ang, resample=Image.Resampling.BILINEAR, expand=True)
        bbox = mask.getbbox()
        if bbox:
            mask = mask.crop(bbox)
        k = rng.uniform(0.85, 1.15)
        if abs(k - 1) > 0.04:
            mask = mask.resize((max(1, int(mask.size[0] * k)), max(1, int(mask.size[1] * k))),
                               Image.Resampling.BILINEAR)
        pieces.append((mask, rng.choice(colours), s))
    # layout
    heights = [p[0].size[1] for p in pieces if p]
    H = int(max(heights) * (1 + 2 * jitter)) + 4
    space = int(size * 0.35)
    total = sum(p[0].size[0] if p else space for p in pieces) + 8
    strip = Image.new("RGBA", (total + 8, H), (0, 0, 0, 0))
    x = 2
    for p in pieces:
        if p is None:
            x += space
            continue
        mask, colour, _s = p
        w, h = mask.size
        y = int((H - h) / 2 + rng.uniform(-jitter, jitter) * h)
        y = min(max(0, y), H - h)
        layer = Image.new("RGBA", mask.size, colour + (255,))
        layer.putalpha(mask)
        strip.alpha_composite(layer, (x, y))
        x += max(1, int(w * (1 - overlap * rng.uniform(0.7, 1.3))))
    bbox = strip.getbbox()
    return strip.crop(bbox) if bbox else strip


def place(bg: Image.Image, strip: Image.Image, rng: random.Random, fill: tuple[float, float]
          ) -> Image.Image:
    """Scale the strip to fill part of the canvas and paste it at a random offset."""
    W, H = bg.size
    sw, sh = strip.size
    scale = min(W * rng.uniform(*fill) / sw, H * rng.uniform(0.55, 0.9) / sh)
    nw, nh = max(1, int(sw * scale)), max(1, int(sh * scale))
    strip = strip.resize((nw, nh), Image.Resampling.BILINEAR)
    x = rng.randint(0, max(0, W - nw))
    y = rng.randint(0, max(0, H - nh))
    out = bg.convert("RGBA")
    out.alpha_composite(strip, (min(x, max(0, W - nw)), min(y, max(0, H - nh))))
    return out.convert("RGB")


# ---------------------------------------------------------------- distortions

def noise_lines(im: Image.Image, rng: random.Random, n: int, colours, arcs: bool) -> None:
    d = ImageDraw.Draw(im)
    W, H = im.size
    for _ in range(n):
        c = rng.choice(colours)
        width = rng.randint(1, 3)
        r = rng.random()
        if arcs and r < 0.4:
            x0, y0 = rng.randint(-W // 2, W // 2), rng.randint(-H, H // 2)
            x1, y1 = x0 + rng.randint(W // 3, W * 2), y0 + rng.randint(H // 2, H * 2)
            d.arc((x0, y0, x1, y1), rng.randint(0, 360), rng.randint(0, 360), fill=c,
                  width=width)
        elif arcs and r < 0.6:
            # sine curve across the image
            amp, per, ph = rng.uniform(2, H / 3), rng.uniform(W / 3, W * 1.5), rng.uniform(0, 6)
            yc = rng.uniform(H * 0.3, H * 0.7)
            pts = [(x, yc + amp * math.sin(2 * math.pi * x / per + ph)) for x in range(0, W, 3)]
            d.line(pts, fill=c, width=width)
        else:
            d.line((rng.randint(0, W), rng.randint(0, H), rng.randint(0, W),
                    rng.randint(0, H)), fill=c, width=width)


def noise_dots(im: Image.Image, rng: random.Random, n: int, colours) -> None:
    d = ImageDraw.Draw(im)
    W, H = im.size
    for _ in range(n):
        x, y = rng.randint(0, W), rng.randint(0, H)
        r = rng.choice([0, 0, 1, 1, 2])
        d.ellipse((x - r, y - r, x + r, y + r), fill=rng.choice(colours))


def warp(im: Image.Image, rng: random.Random, strength: float) -> Image.Image:
    W, H = im.size
    arr = np.asarray(im)
    xs, ys = np.meshgrid(np.arange(W, dtype=np.float32), np.arange(H, dtype=np.float32))
    ax = strength * H * rng.uniform(0.02, 0.08)
    ay = strength * H * rng.uniform(0.03, 0.12)
    px, py = rng.uniform(H * 0.6, H * 2), rng.uniform(W * 0.3, W * 1.2)
    mx = xs + ax * np.sin(2 * np.pi * ys / px + rng.uniform(0, 6.3))
    my = ys + ay * np.sin(2 * np.pi * xs / py + rng.uniform(0, 6.3))
    if rng.random() < 0.5:  # smooth random (elastic) field
        nrng = np.random.default_rng(rng.getrandbits(32))
        g = nrng.normal(0, 1, (2, 4, 6)).astype(np.float32)
        fx = cv2.resize(g[0], (W, H), interpolation=cv2.INTER_CUBIC)
        fy = cv2.resize(g[1], (W, H), interpolation=cv2.INTER_CUBIC)
        mx += fx * strength * H * 0.04
        my += fy * strength * H * 0.04
    if rng.random() < 0.4:  # shear / perspective-ish skew
        sh = rng.uniform(-0.3, 0.3) * strength
        mx += sh * (ys - H / 2)
    out = cv2.remap(arr, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    return Image.fromarray(out)


def finish(im: Image.Image, rng: random.Random, blur: float, jpeg: int | None,
           gauss: float) -> Image.Image:
    if blur > 0.05:
        im = im.filter(ImageFilter.GaussianBlur(blur))
    if gauss > 0:
        arr = np.asarray(im).astype(np.float32)
        nrng = np.random.default_rng(rng.getrandbits(32))
        arr += nrng.normal(0, gauss, arr.shape).astype(np.float32)
        im = Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))
    if jpeg:
        buf = io.BytesIO()
        im.save(buf, "JPEG", quality=jpeg)
        buf.seek(0)
        im = Image.open(buf).convert("RGB")
    return im


# ---------------------------------------------------------------- styles

_IC_POOL: dict[tuple[int, tuple[str, ...]], object] = {}


def _imagecaptcha(rng: random.Random, text: str, fonts: list[str]) -> Image.Image:
    """The `captcha` package's ImageCaptcha, from a pool of 32 generator set-ups (each a
    size and three fonts, fixed by the pool index and the font list)."""
    from captcha.image import ImageCaptcha

    idx = rng.randrange(32)
    key = (idx, tuple(fonts))
    gen = _IC_POOL.get(key)
    if gen is None:
        prng = random.Random(idx * 7919 + len(fonts))
        w = prng.choice([160, 160, 200, 220, 250])
        h = prng.choice([60, 60, 70, 80])
        sizes = (int(h * 0.7), int(h * 0.8), int(h * 0.9))
        gen = ImageCaptcha(width=w, height=h, fonts=prng.sample(fonts, min(3, len(fonts))),
                           font_sizes=sizes)
        _IC_POOL[key] = gen
    # captcha 0.7 draws every random choice from the `secrets` module (the OS's entropy,
    # which no seed reaches); older releases drew from the global `random` module. Both
    # are pointed at a generator seeded from rng for the call, so that a seed gives the
    # same image every time (the evaluation sets and their cached readings rely on it).
    import captcha.image as ic_module

    seeded = random.Random(rng.getrandbits(64))
    saved_secrets = getattr(ic_module, "secrets", None)
    ic_module.secrets = _SeededSecrets(seeded)  # type: ignore[attr-defined]
    state = random.getstate()
    random.seed(seeded.getrandbits(64))
    try:
        im = gen.generate_image(text)  # type: ignore[attr-defined]
    finally:
        random.setstate(state)
        if saved_secrets is None:
            del ic_module.secrets  # type: ignore[attr-defined]
        else:
            ic_module.secrets = saved_secrets  # type: ignore[attr-defined]
    return im.convert("RGB")


class _SeededSecrets:
    """The part of the `secrets` module the captcha package calls, from a seeded RNG."""

    def __init__(self, rng: random.Random) -> None:
        self._rng = rng

    def randbelow(self, n: int) -> int:
        return self._rng.randrange(n)

    def randbits(self, k: int) -> int:
        return self._rng.getrandbits(k)

    def choice(self, seq):  # type: ignore[no-untyped-def]
        return self._rng.choice(seq)


def make_sample(rng: random.Random, style: str, fonts: list[str]
                ) -> tuple[Image.Image, str, str]:
    """One captcha of a style: (image, label without spaces, expected answer)."""
    if style == "math":
        drawn, label, answer = random_expression(rng)
    elif style == "digits":
        drawn = random_text(rng, "digits")
        label = answer = drawn
    else:
        drawn = random_text(rng)
        label = answer = drawn

    if style == "imagecaptcha":
        return _imagecaptcha(rng, drawn.replace(" ", ""), fonts), label, answer

    if style in ("digits", "math"):
        sub = rng.choice(["clean", "lines", "dots", "warp", "colour", "overlap",
                          "blurjpeg", "mixed"])
    else:
        sub = style
    mixed = sub == "mixed"
    r = rng.random

    H = rng.choice([40, 50, 60, 64, 70, 80])
    aspect = rng.uniform(2.5, 5.5) if len(label) > 4 else rng.uniform(2.0, 4.5)
    W = int(H * aspect)

    # background
    if sub == "colour" or (mixed and r() < 0.5):
        bg_kind = rng.choice(["solid", "gradient", "texture", "gradient"])
    else:
        bg_kind = "white" if r() < 0.7 else rng.choice(["solid", "gradient", "texture"])
    bg, bg_lum = background(rng, W, H, bg_kind)

    # text colours
    if sub == "colour" or (mixed and r() < 0.4):
        colours = [_contrasting(rng, bg_lum) for _ in range(rng.randint(2, 5))]
    elif bg_lum > 150 and r() < 0.6:
        colours = [_rand_colour(rng, 0, 60)]
    else:
        colours = [_contrasting(rng, bg_lum)]

    rot = {"clean": 6, "warp": 25, "overlap": 20}.get(sub, 15)
    if mixed:
        rot = rng.uniform(0, 30)
    overlap = 0.0
    if sub == "overlap":
        overlap = rng.uniform(0.1, 0.28)
    elif mixed or sub in ("lines", "dots", "colour", "warp"):
        overlap = rng.uniform(-0.1, 0.2)
    else:
        overlap = rng.uniform(-0.15, 0.1)
    strip = render_glyphs(rng, drawn, fonts, size=rng.choice([32, 36, 40, 48]), rot=rot,
                          overlap=overlap, colours=colours,
                          per_char_font=r() < (0.3 if mixed else 0.1),
                          jitter=rng.uniform(0, 0.15 if sub != "clean" else 0.05),
                          bold=r() < 0.15)
    im = place(bg, strip, rng, (0.6, 0.95))

    noise_colours = colours + [_contrasting(rng, bg_lum, 40) for _ in range(2)]
    if sub == "lines" or (mixed and r() < 0.5):
        noise_lines(im, rng, rng.randint(1, 7), noise_colours, arcs=True)
    elif sub not in ("clean",) and r() < 0.2:
        noise_lines(im, rng, rng.randint(1, 2), noise_colours, arcs=True)
    if sub == "dots" or (mixed and r() < 0.4):
        noise_dots(im, rng, int(W * H * rng.uniform(0.005, 0.04)), noise_colours)
    if sub == "warp" or (mixed and r() < 0.5):
        im = warp(im, rng, rng.uniform(0.6, 1.4))
    elif sub not in ("clean",) and r() < 0.25:
        im = warp(im, rng, rng.uniform(0.2, 0.6))

    blur, jpeg, gauss = 0.0, None, 0.0
    if sub == "blurjpeg":
        blur = rng.uniform(0.3, 1.4)
        jpeg = rng.randint(8, 45)
        gauss = rng.uniform(0, 18)
    elif mixed:
        blur = rng.uniform(0, 1.0) if r() < 0.4 else 0.0
        jpeg = rng.randint(10, 70) if r() < 0.4 else None
        gauss = rng.uniform(0, 15) if r() < 0.3 else 0.0
    elif sub != "clean" and r() < 0.2:
        blur = rng.uniform(0, 0.8)
        jpeg = rng.randint(30, 90) if r() < 0.5 else None
    im = finish(im, rng, blur, jpeg, gauss)
    return im, label, answer


def sample_style(rng: random.Random) -> str:
    names = list(TRAIN_WEIGHTS)
    return rng.choices(names, [TRAIN_WEIGHTS[n] for n in names])[0]
