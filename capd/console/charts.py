"""Charts drawn on the server as SVG shapes (no script, no inline style): a template turns
a Chart into <rect>s with CSS classes, so the Content-Security-Policy stays strict."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

WIDTH, HEIGHT = 720, 200
LEFT, RIGHT, TOP, BOTTOM = 56, 8, 10, 22  # margins for the axis labels
SERIES_CLASSES = 8  # .s0 .. .s7 in console.css; more series reuse them


@dataclass(frozen=True)
class Rect:
    x: float
    y: float
    w: float
    h: float
    cls: str
    title: str  # the tooltip: bucket, series and value


@dataclass(frozen=True)
class Label:
    x: float
    y: float
    text: str


@dataclass(frozen=True)
class Chart:
    title: str
    width: int
    height: int
    rects: list[Rect]
    x_labels: list[Label]
    y_labels: list[Label]
    grid: list[float]  # y of horizontal grid lines
    legend: list[tuple[str, str]]  # (class, series name)
    empty: bool


def _nice_top(value: float) -> float:
    """The smallest 1/2/5 x 10^n at or above ``value`` (an axis top)."""
    if value <= 0:
        return 1.0
    exp = math.floor(math.log10(value))
    for step in (1, 2, 5, 10):
        top = step * 10.0 ** exp
        if top >= value:
            return top
    return 10.0 ** (exp + 1)


def stacked_bars(title: str, buckets: Sequence[str], series: dict[str, Sequence[float]],
                 fmt: Callable[[float], str]) -> Chart:
    """One bar per bucket, stacked by series (e.g. days x task types)."""
    names = sorted(series)
    n = max(1, len(buckets))
    totals = [sum(series[s][i] for s in names) for i in range(len(buckets))]
    top = _nice_top(max(totals, default=0.0))
    plot_w, plot_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    slot = plot_w / n
    bar_w = max(1.0, slot * 0.75)
    rects = []
    for i, bucket in enumerate(buckets):
        y = float(TOP + plot_h)
        x = LEFT + i * slot + (slot - bar_w) / 2
        for k, name in enumerate(names):
            value = series[name][i]
            if value <= 0:
                continue
            h = plot_h * value / top
            y -= h
            rects.append(Rect(round(x, 1), round(y, 1), round(bar_w, 1), round(h, 1),
                              f"s{k % SERIES_CLASSES}", f"{bucket} {name}: {fmt(value)}"))
    every = max(1, math.ceil(n / 10))
    x_labels = [Label(round(LEFT + i * slot + slot / 2, 1), HEIGHT - 6.0, b)
                for i, b in enumerate(buckets) if i % every == 0]
    grid = [round(TOP + plot_h * (1 - f), 1) for f in (0.0, 0.5, 1.0)]
    y_labels = [Label(LEFT - 6.0, round(g + 4, 1), fmt(top * f))
                for g, f in zip(grid, (0.0, 0.5, 1.0), strict=True)]
    legend = [(f"s{k % SERIES_CLASSES}", name) for k, name in enumerate(names)]
    return Chart(title, WIDTH, HEIGHT, rects, x_labels, y_labels, grid, legend,
                 empty=not rects)
