"""Server-drawn charts: bar geometry, stacking, axis and legend (no browser needed)."""

from __future__ import annotations

from capd.console.charts import HEIGHT, stacked_bars


def test_bars_stack_per_bucket_and_scale_to_a_round_top() -> None:
    chart = stacked_bars("t", ["d1", "d2"], {"A": [30, 0], "B": [10, 20]}, lambda v: f"{v:g}")
    assert [r.cls for r in chart.rects] == ["s0", "s1", "s1"]  # zeros draw nothing
    a, b1, b2 = chart.rects
    assert a.y + a.h == HEIGHT - 22  # A sits on the axis, B on top of it
    assert abs(b1.y + b1.h - a.y) < 0.2
    assert abs(a.h / b2.h - 1.5) < 0.01
    assert chart.y_labels[-1].text == "50"  # 40 rounds up to 50
    assert chart.legend == [("s0", "A"), ("s1", "B")] and not chart.empty
    assert a.title == "d1 A: 30"


def test_an_empty_period_draws_nothing() -> None:
    chart = stacked_bars("t", ["d1"], {}, str)
    assert chart.empty and chart.rects == []
