"""Durable callback delivery (spec §8, issue 12): the store's outbox, sent by any node.

A finished task's callback is an outbox row, written in the transaction that finished the
task (``Store.finish_task`` with ``callback``), so it survives a restart. Every serving
node runs one ``OutboxSender``: it claims due rows with a lease
(``Store.claim_callbacks``), at most ``concurrency`` in flight on the node and at most
``per_account`` per account across all nodes, so that one account's slow receiver holds
only its own deliveries. Each attempt goes through ``post_callback`` (the address guard
first, then the checked address itself), bounded by ``timeout_s``; then the row is
settled: delivered, failed (the guard refused the host, or ``retries`` retries are used
up), or pending again after ``backoff_s``, ``2·backoff_s`` … A node that dies
mid-attempt leaves a lease that runs out (``lease_s``); another node (or this one,
restarted) then delivers the row. Delivery is at least once.

Logs show only ``scheme://host/path`` of a URL (``redacted``).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
from collections.abc import Callable

import httpx

from capd.constants import (
    CALLBACK_BACKOFF_S,
    CALLBACK_CONCURRENCY,
    CALLBACK_LEASE_S,
    CALLBACK_PER_ACCOUNT,
    CALLBACK_POLL_S,
    CALLBACK_RETRIES,
    CALLBACK_TIMEOUT_S,
)
from capd.outbound.callbacks import callback_transport, callback_url, post_callback, redacted
from capd.outbound.guard import AddressGuard
from capd.store.base import Callback, CallbackState, Store

log = logging.getLogger("capd.outbound")


class OutboxSender:
    """Delivers the store's pending callbacks in the background (``start``/``stop``);
    ``wake`` says new rows may be due (this node finished a task).

    Counters ``delivered``, ``failed`` (given up) and ``retrying`` count this node's
    outcomes, for tests and metrics; the store's ``callback_counts`` is the deployment's
    view.
    """

    def __init__(self, store: Store, guard: AddressGuard, clock: Callable[[], float], *,
                 timeout_s: float = CALLBACK_TIMEOUT_S, retries: int = CALLBACK_RETRIES,
                 backoff_s: float = CALLBACK_BACKOFF_S,
                 concurrency: int = CALLBACK_CONCURRENCY,
                 per_account: int = CALLBACK_PER_ACCOUNT, lease_s: float = CALLBACK_LEASE_S,
                 poll_s: float = CALLBACK_POLL_S,
                 verify: ssl.SSLContext | bool = True) -> None:
        self._store = store
        self._guard = guard
        self._clock = clock
        self._timeout_s = timeout_s
        self._retries = retries
        self._backoff_s = backoff_s
        self._concurrency = max(concurrency, 1)
        self._per_account = max(per_account, 1)
        self._lease_s = max(lease_s, timeout_s * 2)
        self._poll_s = poll_s
        self._verify = verify
        self._transport: httpx.AsyncHTTPTransport | None = None
        self._loop_task: asyncio.Task[None] | None = None
        self._in_flight: set[asyncio.Task[None]] = set()
        self._wake = asyncio.Event()
        self.delivered = 0
        self.failed = 0
        self.retrying = 0  # failed attempts put back for a retry

    async def start(self) -> None:
        """Start delivering on the running loop (a second call does nothing)."""
        if self._loop_task is not None:
            return
        self._transport = callback_transport(self._verify)
        self._loop_task = asyncio.create_task(self._run(), name="callback-outbox")

    async def stop(self) -> None:
        """Stop; deliveries cut short stay pending in the store and are due again at once
        (any node may send them)."""
        if self._loop_task is not None:
            self._loop_task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None
        for job in self._in_flight:
            job.cancel()
        await asyncio.gather(*self._in_flight, return_exceptions=True)
        self._in_flight.clear()
        if self._transport is not None:
            await self._transport.aclose()
            self._transport = None

    def wake(self) -> None:
        """New rows may be due: look now rather than at the next poll."""
        self._wake.set()

    async def _run(self) -> None:
        while True:
            self._wake.clear()
            free = self._concurrency - len(self._in_flight)
            if free > 0:
                try:
                    claimed = await self._store.claim_callbacks(
                        self._clock(), self._lease_s, free, self._per_account)
                except Exception:
                    log.exception("claiming callbacks failed")
                    claimed = []
                for row in claimed:
                    job = asyncio.create_task(self._deliver(row))
                    self._in_flight.add(job)
                    job.add_done_callback(self._done)
                if len(claimed) == free:
                    continue  # maybe more are due; a free slot wakes us otherwise
            # asyncio.timeout, not wait_for: on Python 3.11 wait_for swallows a cancel
            # that arrives as the event is set (a delivery ending as stop() cancels this
            # loop), and the loop then ran on with stop() waiting for it forever
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._poll_s):
                    await self._wake.wait()

    def _done(self, job: asyncio.Task[None]) -> None:
        self._in_flight.discard(job)
        self._wake.set()

    async def _deliver(self, row: Callback) -> None:
        """One attempt at ``row`` (claimed), then its settlement."""
        try:
            outcome = await self._attempt(row)
        except asyncio.CancelledError:
            # stopping: hand the row back, due at once, instead of holding its lease
            with contextlib.suppress(Exception):
                await self._store.settle_callback(row.id, CallbackState.PENDING,
                                                  self._clock())
            raise
        state, next_at = self._settlement(row, outcome)
        try:
            await self._store.settle_callback(row.id, state, next_at)
        except Exception:  # the lease runs out and the row is tried again
            log.exception("settling callback %d failed", row.id)

    async def _attempt(self, row: Callback) -> bool | str | None:
        url = callback_url(row.url)
        if url is None:
            return None
        assert self._transport is not None
        try:
            async with asyncio.timeout(self._timeout_s):  # not wait_for: see _run
                return await post_callback(self._transport, self._guard, url,
                                           row.body.encode(), self._timeout_s)
        except Exception as exc:  # timeout, transport error: a failed attempt
            return type(exc).__name__  # not str(exc): it may quote the URL

    def _settlement(self, row: Callback, outcome: bool | str | None
                    ) -> tuple[CallbackState, float]:
        now = self._clock()
        if outcome is True:
            self.delivered += 1
            return CallbackState.DELIVERED, now
        if outcome is None:
            self.failed += 1
            log.warning("callback to %s given up: not an http(s) URL, or its host is"
                        " internal or does not resolve", redacted(row.url))
            return CallbackState.FAILED, now
        if row.attempts > self._retries:
            self.failed += 1
            log.warning("callback to %s given up after %d attempts (last: %s)",
                        redacted(row.url), row.attempts, outcome)
            return CallbackState.FAILED, now
        self.retrying += 1
        delay = self._backoff_s * 2 ** (row.attempts - 1)
        log.debug("callback to %s failed (%s), retry in %.2f s", redacted(row.url), outcome,
                  delay)
        return CallbackState.PENDING, now + delay
