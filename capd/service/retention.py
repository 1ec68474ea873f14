"""Retention (issue 12): what is forgotten, and when.

A finished task's payload (image, proxy and its login, cookies, userAgent: the payload and
options JSON, and its callback URL, which may carry credentials) is dropped
``payload_retention_s`` after the task ended; the task row itself goes
``task_retention_s`` after it ended. Both run in batches of ``PRUNE_BATCH`` rows, each its
own short transaction. The ledger is never touched: balances and history stay exact.

A pruned task answers getTaskResult as an unknown task (ERROR_NO_SUCH_CAPCHA_ID), as an
expired result already does (spec §4); retention is far longer than the result TTL.
"""

from __future__ import annotations

from dataclasses import dataclass

from capd.config import Settings
from capd.constants import PRUNE_BATCH
from capd.store.base import Store


@dataclass(frozen=True)
class Pruned:
    """What one retention pass removed."""

    payloads_dropped: int = 0
    tasks_deleted: int = 0
    bytes_reclaimed: int = 0

    def __add__(self, other: Pruned) -> Pruned:
        return Pruned(self.payloads_dropped + other.payloads_dropped,
                      self.tasks_deleted + other.tasks_deleted,
                      self.bytes_reclaimed + other.bytes_reclaimed)


async def prune_batch(store: Store, settings: Settings, now: float,
                      batch: int = PRUNE_BATCH) -> Pruned:
    """One batch of each kind: at most ``batch`` payloads dropped and ``batch`` tasks
    deleted, in two short transactions (what ``capd serve`` does each round)."""
    dropped = await store.drop_payloads(now - settings.payload_retention_s, batch, now)
    deleted = await store.delete_tasks(now - settings.task_retention_s, batch)
    return Pruned(dropped, deleted)


async def prune_all(store: Store, settings: Settings, now: float,
                    batch: int = PRUNE_BATCH) -> Pruned:
    """Batches until nothing is left to prune, then give the space back (``capd prune``)."""
    total = Pruned()
    while True:
        step = await prune_batch(store, settings, now, batch)
        total += step
        if step.payloads_dropped < batch and step.tasks_deleted < batch:
            break
    return total + Pruned(bytes_reclaimed=await store.reclaim_space())
