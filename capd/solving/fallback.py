"""The human fallback (issue 15): an ImageToText task that the built-in reading would fail
as unsolvable (an unreadable image, or a reading below the task's recognizingThreshold)
goes back to the worker queue for people instead of failing, when the operator turned
``human_fallback`` on and an external worker (not a ``capd worker``) has asked for
ImageToText work within the recent window (spec §7).

From then on only external workers lease the task (``Store.hand_to_humans``); the built-in
readers, in-process or ``capd worker``, never claim it again. It keeps its deadline: not
answered by then, it fails as any ImageToText task does (ERROR_CAPTCHA_UNSOLVABLE, not
charged). A worker's answer is charged as any solution and, for a task naming a stored
module, kept as a labelled sample of it (``capd.modules.samples``). With the setting off,
or no external worker about, the task fails at once, as without the fallback.

Both built-in readers ask here: the in-process solver after its reading, and the worker
desk when a ``capd worker`` completes a lease with ERROR_CAPTCHA_UNSOLVABLE.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from capd.metrics import Metrics
from capd.solving.dispatch import Dispatcher
from capd.solving.imagetask import IMAGE_TYPE, UNSOLVABLE
from capd.store.base import Store

log = logging.getLogger("capd.fallback")


class HumanFallback:
    """Decides, and makes, the hand-over of a task the built-in reading failed; store,
    dispatcher and clock are injected, ``enabled`` is the ``human_fallback`` setting."""

    def __init__(self, store: Store, dispatcher: Dispatcher, clock: Callable[[], float],
                 enabled: bool, metrics: Metrics | None = None) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.clock = clock
        self.enabled = enabled
        self.metrics = metrics

    async def hand_over(self, task_id: int, task_type: str, owner: str,
                        error_code: str | None) -> bool:
        """Hand the task, leased by ``owner`` (a built-in reader) and about to be failed
        with ``error_code``, to humans instead; True when it went (the reader then
        finishes nothing), False when the reader should finish it as it meant to."""
        if not self.enabled or error_code != UNSOLVABLE or task_type != IMAGE_TYPE:
            return False
        if not await self.dispatcher.humans_serve(task_type):
            return False
        if not await self.store.hand_to_humans(task_id, owner, self.clock()):
            return False  # the lease or the deadline ran out meanwhile: finish as before
        log.info("task %d: the built-in reading failed; handed to human workers", task_id)
        if self.metrics is not None:
            self.metrics.inc("capd_human_fallback_total", type=task_type)
        self.dispatcher.notify(task_type)
        return True
