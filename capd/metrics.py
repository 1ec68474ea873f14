"""Prometheus counters, gauges and a latency histogram, rendered as text (no secrets)."""

from __future__ import annotations

import bisect
from collections import defaultdict

_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)

_HELP = {
    "capd_requests_total": "API requests by method and outcome (errorCode, or ok)",
    "capd_tasks_created_total": "Tasks accepted by type",
    "capd_tasks_finished_total": "Tasks finished by type and outcome",
    "capd_ocr_seconds": "Built-in recogniser time per image",
    "capd_queue_depth": "Queued tasks per type (sampled at scrape)",
    "capd_human_fallback_total": "Tasks the built-in reading failed, handed to human workers",
}


class Metrics:
    def __init__(self) -> None:
        self._counters: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(
            lambda: defaultdict(float))
        self._gauges: dict[str, dict[tuple[tuple[str, str], ...], float]] = defaultdict(dict)
        self._hist: dict[str, list[int]] = {}
        self._hist_sum: dict[str, float] = defaultdict(float)

    def inc(self, name: str, amount: float = 1.0, **labels: str) -> None:
        self._counters[name][tuple(sorted(labels.items()))] += amount

    def set_gauge(self, name: str, value: float, **labels: str) -> None:
        self._gauges[name][tuple(sorted(labels.items()))] = value

    def observe(self, name: str, seconds: float) -> None:
        counts = self._hist.setdefault(name, [0] * (len(_BUCKETS_S) + 1))
        counts[bisect.bisect_left(_BUCKETS_S, seconds)] += 1
        self._hist_sum[name] += seconds

    def render(self) -> str:
        lines: list[str] = []

        def labels_text(labels: tuple[tuple[str, str], ...], extra: str = "") -> str:
            parts = [f'{k}="{_escape(v)}"' for k, v in labels]
            if extra:
                parts.append(extra)
            return "{" + ",".join(parts) + "}" if parts else ""

        for kind, table in (("counter", self._counters), ("gauge", self._gauges)):
            for name in sorted(table):
                lines.append(f"# HELP {name} {_HELP.get(name, name)}")
                lines.append(f"# TYPE {name} {kind}")
                for labels, value in sorted(table[name].items()):
                    lines.append(f"{name}{labels_text(labels)} {value:g}")
        for name in sorted(self._hist):
            counts = self._hist[name]
            lines.append(f"# HELP {name} {_HELP.get(name, name)}")
            lines.append(f"# TYPE {name} histogram")
            total = 0
            for bound, count in zip((*_BUCKETS_S, float("inf")), counts, strict=True):
                total += count
                le = "+Inf" if bound == float("inf") else f"{bound:g}"
                lines.append(f'{name}_bucket{{le="{le}"}} {total}')
            lines.append(f"{name}_sum {self._hist_sum[name]:g}")
            lines.append(f"{name}_count {total}")
        return "\n".join(lines) + "\n"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
