"""The built-in ImageToText solver: leases queued image tasks and reads them in the pool.

It claims only as many tasks as the pool has free threads, so waiting work stays in the
store (durable) rather than in memory; a lease that outlives a crashed process expires
and the task is claimed again, until its deadline. It claims as a built-in reader: a task
handed to humans (``capd.solving.fallback``) is never its again.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable

from capd.domain.tasks import ValidationRules
from capd.metrics import Metrics
from capd.solving.dispatch import Dispatcher
from capd.solving.fallback import HumanFallback
from capd.solving.imagetask import IMAGE_TYPE, image_bytes, image_spec, outcome
from capd.solving.ocr.base import UnreadableImage
from capd.solving.pool import OcrPool
from capd.store.base import Claimer, Store, Task

log = logging.getLogger("capd.solver")

Finisher = Callable[..., Awaitable[Task | None]]
IDLE_RECHECK_S = 1.0  # also picks up leases that expired on a crashed node


class BuiltinSolver:
    def __init__(self, store: Store, dispatcher: Dispatcher, pool: OcrPool,
                 clock: Callable[[], float], lease_s: float, rules: ValidationRules,
                 finish: Finisher, metrics: Metrics,
                 fallback: HumanFallback | None = None) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.pool = pool
        self.clock = clock
        self.lease_s = lease_s
        self.rules = rules
        self.finish = finish
        self.metrics = metrics
        self.fallback = fallback  # the human fallback, where the operator turned it on
        self.owner = f"builtin-{uuid.uuid4().hex[:12]}"
        self._free = asyncio.Semaphore(pool.size)
        self._running: set[asyncio.Task[None]] = set()

    async def run(self) -> None:
        self.dispatcher.attach(IMAGE_TYPE)
        try:
            while True:
                await self._free.acquire()
                waiter = self.dispatcher.waiter([IMAGE_TYPE])
                try:
                    claimed = await self.store.claim_tasks([IMAGE_TYPE], 1, self.owner,
                                                           self.lease_s, self.clock(),
                                                           Claimer.READER)
                except Exception:  # a store outage must not end the solver for good
                    log.exception("claiming image tasks failed; retrying")
                    claimed = []
                if not claimed:
                    self._free.release()
                    await self.dispatcher.wait(waiter, IDLE_RECHECK_S)
                    continue
                self.dispatcher.forget(waiter)
                job = asyncio.create_task(self._solve(claimed[0]))
                self._running.add(job)
                job.add_done_callback(self._running.discard)
        finally:
            self.dispatcher.detach(IMAGE_TYPE)
            for job in list(self._running):
                job.cancel()

    async def _solve(self, task: Task) -> None:
        try:
            spec = image_spec(task.options["image"])
            started = time.perf_counter()
            try:
                reading = await self.pool.read(image_bytes(task.payload, self.rules), spec)
            except UnreadableImage:
                reading = None
            self.metrics.observe("capd_ocr_seconds", time.perf_counter() - started)
            solution, error = outcome(reading, spec)
            if self.fallback is not None and await self.fallback.hand_over(
                    task.id, task.type, self.owner, error):
                return
            await self.finish(task.id, solution=solution, error_code=error, owner=self.owner)
        except Exception:  # one bad task must not stop the solver
            log.exception("built-in solver failed on a task")
        finally:
            self._free.release()
