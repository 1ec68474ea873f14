"""Capacity and wake-ups: which task types can be taken now, and who to wake for them.

A type is served while the built-in solver for it runs in this process, or while an
external worker has asked for it within the recent window (spec §7). createTask asks
``check_capacity`` before queueing, so a type nobody serves answers
ERROR_NO_SLOT_AVAILABLE at once, never a hang.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict
from collections.abc import Callable, Iterable

from capd.config import Settings
from capd.errors import CapdError
from capd.store.base import Store

Waiter = asyncio.Future[None]


class Dispatcher:
    """Knows which types are served (built-in solvers here, workers seen lately through
    the store) and wakes long-polling workers; store, clock and settings are injected."""

    def __init__(self, store: Store, clock: Callable[[], float], settings: Settings) -> None:
        self.store = store
        self.clock = clock
        self.seen_window_s = settings.worker_seen_window_s
        self._builtin: dict[str, int] = defaultdict(int)
        self._waiters: dict[str, list[Waiter]] = defaultdict(list)
        self._depth_limit = dict(settings.queue_depth_limits)
        self._default_depth_limit = settings.queue_depth_limit

    def attach(self, task_type: str) -> None:
        """A built-in solver for ``task_type`` is now taking work in this process."""
        self._builtin[task_type] += 1

    def detach(self, task_type: str) -> None:
        self._builtin[task_type] = max(0, self._builtin[task_type] - 1)

    async def serves(self, task_type: str) -> bool:
        if self._builtin.get(task_type, 0) > 0:
            return True
        since = self.clock() - self.seen_window_s
        return await self.store.worker_seen_since(task_type, since)

    async def humans_serve(self, task_type: str) -> bool:
        """Whether an external worker (not a built-in reader) asked for the type within
        the recent window: the human fallback's condition (``capd.solving.fallback``)."""
        since = self.clock() - self.seen_window_s
        return await self.store.worker_seen_since(task_type, since, external=True)

    async def check_capacity(self, task_type: str) -> None:
        """Raise ERROR_NO_SLOT_AVAILABLE unless the type is served and its queue has room."""
        if not await self.serves(task_type):
            raise CapdError("ERROR_NO_SLOT_AVAILABLE", f"no solver serves {task_type} now")
        limit = self._depth_limit.get(task_type, self._default_depth_limit)
        if await self.store.queue_depth(task_type) >= limit:
            raise CapdError("ERROR_NO_SLOT_AVAILABLE", f"the {task_type} queue is full")

    def notify(self, task_type: str) -> None:
        """New work of this type is queued: wake everyone waiting for it."""
        for waiter in self._waiters.pop(task_type, ()):
            if not waiter.done():
                waiter.set_result(None)

    def waiter(self, types: Iterable[str]) -> Waiter:
        """Register interest in new work of these types. Register *before* looking for
        work, so that work announced in between is not missed."""
        waiter: Waiter = asyncio.get_running_loop().create_future()
        for task_type in types:
            self._waiters[task_type].append(waiter)
        return waiter

    async def wait(self, waiter: Waiter, timeout_s: float) -> None:
        """Sleep until the waiter is woken or the timeout passes; then forget it."""
        try:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(waiter), timeout_s)
        finally:
            self.forget(waiter)

    def forget(self, waiter: Waiter) -> None:
        if not waiter.done():
            waiter.cancel()
        for task_type in [t for t, ws in self._waiters.items() if waiter in ws]:
            remaining = [w for w in self._waiters[task_type] if w is not waiter]
            if remaining:
                self._waiters[task_type] = remaining
            else:
                del self._waiters[task_type]
