"""Windowed counters held in process memory.

Used by the SQLite backend: an embedded deployment serves from one process, and these
counters (poll counts and rates, violation tallies) are short-lived, so keeping them off
the disk spares a write on every poll. Bans themselves are stored, not counted here.
"""

from __future__ import annotations


class MemoryCounters:
    """name -> (count, window end); expired entries are swept as new ones arrive."""

    def __init__(self, sweep_every: int = 10_000) -> None:
        self._data: dict[str, tuple[int, float]] = {}
        self._sweep_every = sweep_every
        self._hits = 0

    def incr(self, name: str, window_s: float, now: float) -> int:
        count, ends = self._data.get(name, (0, 0.0))
        if ends <= now:
            count, ends = 0, now + window_s
        count += 1
        self._data[name] = (count, ends)
        self._hits += 1
        if self._hits >= self._sweep_every:
            self.sweep(now)
        return count

    def sweep(self, now: float) -> int:
        """Drop counters whose window has ended; returns how many."""
        self._hits = 0
        before = len(self._data)
        self._data = {k: v for k, v in self._data.items() if v[1] > now}
        return before - len(self._data)

    def __len__(self) -> int:
        return len(self._data)
