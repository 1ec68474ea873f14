"""Capacity and wake-ups: which task types can be taken now, and who to wake for them.

A type is served while a solver for it is attached (the built-in OCR, or — through the
worker protocol — an external worker seen recently). createTask asks ``check_capacity``
before queueing, so a type nobody serves answers ERROR_NO_SLOT_AVAILABLE at once.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import defaultdict

from capd.errors import CapdError
from capd.store.base import Store


class Dispatcher:
    def __init__(self, store: Store, depth_limit: dict[str, int] | None = None,
                 default_depth_limit: int = 1000) -> None:
        self.store = store
        self._served: dict[str, int] = defaultdict(int)
        self._events: dict[str, asyncio.Event] = defaultdict(asyncio.Event)
        self._depth_limit = depth_limit or {}
        self._default_depth_limit = default_depth_limit

    def attach(self, task_type: str) -> None:
        """A solver for ``task_type`` is now taking work."""
        self._served[task_type] += 1

    def detach(self, task_type: str) -> None:
        self._served[task_type] = max(0, self._served[task_type] - 1)

    def serves(self, task_type: str) -> bool:
        return self._served.get(task_type, 0) > 0

    async def check_capacity(self, task_type: str) -> None:
        """Raise ERROR_NO_SLOT_AVAILABLE unless the type is served and its queue has room."""
        if not self.serves(task_type):
            raise CapdError("ERROR_NO_SLOT_AVAILABLE", f"no solver serves {task_type} now")
        limit = self._depth_limit.get(task_type, self._default_depth_limit)
        if await self.store.queue_depth(task_type) >= limit:
            raise CapdError("ERROR_NO_SLOT_AVAILABLE", f"the {task_type} queue is full")

    def notify(self, task_type: str) -> None:
        """New work of this type is queued: wake its waiting solvers."""
        event = self._events.get(task_type)
        if event is not None:
            event.set()

    async def wait(self, task_type: str, timeout_s: float) -> None:
        """Sleep until work of this type is announced, or the timeout passes."""
        event = self._events[task_type]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout_s)
        event.clear()
