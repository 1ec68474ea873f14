"""Synthetic captchas that imitate two hard real schemes, for fine-tuning only.

The fine-tuned engines read two of the labelled schemes badly: Securimage (grey text
under branching strike-through curves and dot noise) and the generic generator's colour
capitals (4-8 characters, a font and a colour per image or per character, wide spacing,
thin stray lines). Each has a few hundred training images, too few for the many shapes
a character takes there. These generators draw the same kind of picture from capd's
training fonts with labels that are right by construction, so training sees many more
shapes of each character in that setting. They are not evaluation sets: nothing is
scored on them, and the synthetic held-out styles (``synth.STYLES``) do not include them.

    python -m training.imitate --out /tmp/imitate.png   # a montage of both, to look at
"""

from __future__ import annotations

import argparse
import math
import random

from PIL import Image, ImageDraw

from training.synth import _font, warp

SECURIMAGE_ALPHABET = "0123456789abcdefghjklmnprstuvwxyz"
GENERIC_ALPHABET = "0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ"
SCHEMES = {"web_securimage_grey": "securimage", "generic_colour_upper": "generic"}


def _glyph(ch: str, font_path: str, size: int, angle: float, stroke: int = 0) -> Image.Image:
    """One character as an L mask, tightly cropped, rotated by angle degrees."""
    font = _font(font_path, size)
    left, top, right, bottom = font.getbbox(ch)
    mask = Image.new("L", (right - left + 4 + 2 * stroke, bottom - top + 4 + 2 * stroke), 0)
    ImageDraw.Draw(mask).text((2 + stroke - left, 2 + stroke - top), ch, fill=255, font=font,
                              stroke_width=stroke, stroke_fill=255)
    if abs(angle) > 0.5:
        mask = mask.rotate(angle, resample=Image.Resampling.BILINEAR, expand=True)
    box = mask.getbbox()
    return mask.crop(box) if box else mask


def _branch(draw: ImageDraw.ImageDraw, rng: random.Random, x: float, y: float,
            heading: float, length: float, width: int, shade: int, depth: int) -> None:
    """A wandering curve that may fork, like Securimage's strike-through lines."""
    points = [(x, y)]
    for _ in range(int(length / 6)):
        heading += rng.uniform(-0.35, 0.35)
        x += 6 * math.cos(heading)
        y += 6 * math.sin(heading)
        points.append((x, y))
        if depth and rng.random() < 0.04:
            _branch(draw, rng, x, y, heading + rng.choice((-1, 1)) * rng.uniform(0.4, 1.0),
                    length * rng.uniform(0.2, 0.5), max(1, width - 1), shade, depth - 1)
    draw.line(points, fill=shade, width=width, joint="curve")


def securimage(rng: random.Random, fonts: list[str]) -> tuple[Image.Image, str]:
    """Grey, heavy, touching characters on white, warped, under branching curves of the
    same grey and a sprinkle of grey dots; 6 characters without i, o, q."""
    label = "".join(rng.choice(SECURIMAGE_ALPHABET) for _ in range(6))
    W, H = 200, 80
    shade = rng.randint(85, 135)
    im = Image.new("L", (W, H), 255)
    font_path = rng.choice(fonts)
    size = rng.randint(34, 44)
    stroke = rng.choice((0, 1, 1, 2))
    slant = rng.uniform(-12, 4)
    masks = [_glyph(ch, font_path, size, slant + rng.uniform(-8, 8), stroke) for ch in label]
    overlap = rng.uniform(0.02, 0.22)
    widths = [m.size[0] for m in masks]
    total = sum(widths) - overlap * sum(widths[1:])
    scale = min(1.0, (W - 16) / total)
    x = rng.uniform(4, max(5, W - total * scale - 4))
    base = rng.uniform(0.45, 0.62) * H
    ink = Image.new("L", (W, H), 0)
    for m in masks:
        if scale < 1.0:
            m = m.resize((max(1, int(m.size[0] * scale)), max(1, int(m.size[1] * scale))),
                         Image.Resampling.BILINEAR)
        y = int(base - m.size[1] / 2 + rng.uniform(-3, 3))
        ink.paste(255, (int(x), y), m)
        x += m.size[0] * (1 - overlap)
    if rng.random() < 0.8:
        ink = warp(ink.convert("RGB"), rng, rng.uniform(0.3, 0.8)).convert("L")
    im.paste(shade, (0, 0), ink)
    draw = ImageDraw.Draw(im)
    for _ in range(rng.randint(3, 8)):
        side = rng.random()
        if side < 0.5:
            x0, y0, heading = rng.uniform(-20, 10), rng.uniform(0, H), rng.uniform(-0.5, 0.5)
        else:
            x0, y0, heading = rng.uniform(0, W), rng.uniform(-10, 5), rng.uniform(0.3, 1.2)
        _branch(draw, rng, x0, y0, heading, rng.uniform(60, 260), rng.randint(2, 5),
                shade + rng.randint(-15, 15), 2)
    for _ in range(rng.randint(200, 900)):
        px, py = rng.randrange(W), rng.randrange(H)
        draw.point((px, py), fill=shade + rng.randint(-30, 60))
    return im.convert("RGB"), label


def _colour(rng: random.Random) -> tuple[int, int, int]:
    """A saturated or pastel colour, as the generic generator draws its characters."""
    h = rng.random()
    s = rng.uniform(0.35, 1.0)
    v = rng.uniform(0.35, 0.95)
    i = int(h * 6) % 6
    f = h * 6 - int(h * 6)
    p, q, t = v * (1 - s), v * (1 - f * s), v * (1 - (1 - f) * s)
    r, g, b = [(v, t, p), (q, v, p), (p, v, t), (p, q, v), (t, p, v), (v, p, q)][i]
    return int(r * 255), int(g * 255), int(b * 255)


def generic(rng: random.Random, fonts: list[str]) -> tuple[Image.Image, str]:
    """4-8 capitals and digits, small on a wide white canvas, a font per image (sometimes
    per character), a colour per character, spacing from tight to very wide, and thin
    stray lines, some across the text."""
    n = rng.randint(4, 8)
    label = "".join(rng.choice(GENERIC_ALPHABET) for _ in range(n))
    H = 80
    size = rng.randint(20, 40)
    per_char_font = rng.random() < 0.3
    font_path = rng.choice(fonts)
    one_colour = _colour(rng) if rng.random() < 0.15 else None
    masks = [_glyph(ch, rng.choice(fonts) if per_char_font else font_path, size,
                    rng.uniform(-10, 10), 1 if rng.random() < 0.2 else 0) for ch in label]
    gap = rng.choice((rng.uniform(-0.05, 0.2), rng.uniform(0.2, 1.0), rng.uniform(1.0, 2.5)))
    advance = [m.size[0] + gap * size for m in masks]
    text_w = sum(advance)
    W = int(max(text_w + rng.uniform(10, 120), 120))
    im = Image.new("RGB", (W, H), (255, 255, 255))
    x = rng.uniform(4, max(5, W - text_w))
    base = rng.uniform(0.35, 0.65) * H
    for m, adv in zip(masks, advance, strict=True):
        y = int(min(max(0, base - m.size[1] / 2 + rng.uniform(-4, 4)), H - m.size[1]))
        im.paste(one_colour or _colour(rng), (int(x), y), m)
        x += adv
    draw = ImageDraw.Draw(im)
    for _ in range(rng.randint(1, 9)):
        shade = rng.choice(((0, 0, 0), (40, 40, 40), _colour(rng)))
        if rng.random() < 0.5:
            y0, y1 = rng.uniform(0.2, 0.8) * H, rng.uniform(0.2, 0.8) * H
            draw.line((rng.uniform(-10, W / 2), y0, rng.uniform(W / 2, W + 10), y1),
                      fill=shade, width=1)
        else:
            cx, cy = rng.uniform(0, W), rng.uniform(0, H)
            a, r = rng.uniform(0, math.pi), rng.uniform(10, 60)
            draw.line((cx - r * math.cos(a), cy - r * math.sin(a),
                       cx + r * math.cos(a), cy + r * math.sin(a)), fill=shade, width=1)
    return im, label


GENERATORS = {"securimage": securimage, "generic": generic}


def main() -> None:
    from training import config
    from training.synth import usable_fonts

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", required=True, help="PNG montage to write")
    ap.add_argument("--n", type=int, default=8, help="images per generator")
    ap.add_argument("--seed", type=int, default=1)
    args = ap.parse_args()
    rng = random.Random(args.seed)
    fonts = usable_fonts(config.fonts_for("train"))
    rows = [GENERATORS[name](rng, fonts)[0] for name in GENERATORS for _ in range(args.n)]
    height = 80
    width = max(r.size[0] for r in rows)
    sheet = Image.new("RGB", (width, height * len(rows)), (200, 200, 200))
    for k, r in enumerate(rows):
        sheet.paste(r, (0, k * height))
    sheet.save(args.out)


if __name__ == "__main__":
    main()
