"""What a backend keeps in process memory: windowed counters, worker presence, read caches.

The counters and worker presence serve the SQLite and in-memory backends: an embedded
deployment serves from one process, and these (poll counts and rates, violation tallies,
when a worker last asked for a type) are short-lived, so keeping them off the disk spares
a write on every poll. Bans themselves are stored, not counted here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from capd.store.base import OPEN_STATES, Claimer, Task

_K = TypeVar("_K")
_V = TypeVar("_V")

CACHE_LIMIT = 50_000  # entries a read cache holds before it starts afresh
FINAL_TASKS_KEPT = 10_000  # finished tasks kept for polls (as the service's final results)


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


class OneProcess:
    """Store methods for a backend served by one process: counters and worker presence
    live in this process's memory (the subclass calls ``__init__``)."""

    def __init__(self) -> None:
        self._counters = MemoryCounters()
        self._worker_seen: dict[str, float] = {}  # type -> last time a worker asked for it
        self._external_seen: dict[str, float] = {}  # the same, of external workers only

    async def incr_counter(self, name: str, window_s: float, now: float) -> int:
        return self._counters.incr(name, window_s, now)

    async def incr_counters(self, counters: list[tuple[str, float]], now: float) -> list[int]:
        return [self._counters.incr(name, window_s, now) for name, window_s in counters]

    async def sweep_counters(self, now: float) -> int:
        return self._counters.sweep(now)

    async def note_workers(self, types: list[str], now: float,
                           claimer: Claimer = Claimer.EXTERNAL) -> None:
        kept = [self._worker_seen]
        if claimer == Claimer.EXTERNAL:
            kept.append(self._external_seen)
        for seen in kept:
            for task_type in types:
                seen[task_type] = max(now, seen.get(task_type, now))

    async def worker_seen_since(self, task_type: str, since: float, *,
                                external: bool = False) -> bool:
        seen = self._external_seen if external else self._worker_seen
        return seen.get(task_type, float("-inf")) >= since

    async def _workers_seen(self) -> dict[str, float]:
        return dict(self._worker_seen)

    async def subscribe(self, on_task: Callable[[str], None]) -> None:
        """One serving process: the dispatcher hears of new work directly."""


class Bounded(dict[_K, _V], Generic[_K, _V]):
    """A read cache that starts afresh when full, so that a storm of distinct lookups
    (unknown keys, say) cannot grow memory."""

    limit = CACHE_LIMIT

    def put(self, key: _K, value: _V) -> None:
        if len(self) >= self.limit:
            self.clear()
        self[key] = value


class FinalTasks(Bounded[int, Task]):
    """Finished tasks as the poll path reads them (without payload): a final task never
    changes what a poll reads, so any node may keep it. Polls come within the result TTL
    of the end, so the newest FINAL_TASKS_KEPT cover them at any sensible rate; more
    would only hold memory (a soak showed 50,000 tasks taking ~75 MB)."""

    limit = FINAL_TASKS_KEPT

    def keep(self, task: Task) -> None:
        if task.state not in OPEN_STATES:
            self.put(task.id, task)
