"""Durable callbacks (issue 12): the outbox sender against real receivers on 127.0.0.1,
over the in-memory store (the store's own rules are in tests/store/test_outbox.py)."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import orjson

from capd.admin import AdminService
from capd.config import load_settings
from capd.outbound.guard import AddressGuard
from capd.outbound.outbox import OutboxSender
from capd.store import open_store
from capd.store.base import CallbackState, NewTask, Store, Task
from tests.helpers import FakeClock
from tests.outbound.servers import TcpServer, read_head

LOOPBACK = AddressGuard(allow_private=True)
WAIT_S = 10.0  # how long a test waits for something that should happen at once


def render(task: Task) -> str:
    return orjson.dumps({"taskId": task.id}).decode()


async def finished_with_callback(store: Store, account_id: int, url: str, count: int,
                                 now: float, first_id: int) -> list[int]:
    ids = iter(range(first_id, first_id + count))
    done = []
    for _ in range(count):
        task = NewTask(account_id=account_id, type="ImageToTextTask", payload={},
                       options={}, price_units=1, created_at=now, deadline_at=now + 60,
                       client_ip="127.0.0.1", callback_url=url)
        task_id = await store.create_task(task, lambda: next(ids))
        assert await store.finish_task(task_id, now, solution={"text": "x"}, callback=render)
        done.append(task_id)
    return done


async def account(store: Store, name: str, now: float) -> int:
    account_id = await store.create_account(name, name * 32, now)
    await store.adjust_balance(account_id, 1000, "topup", "test", "", now)
    return account_id


class Hook:
    """A receiver that records each POST body and answers ``status``, or holds the
    request until ``release`` is set."""

    def __init__(self, status: int = 200, hold: bool = False) -> None:
        self.status = status
        self.hold = hold
        self.release = asyncio.Event()
        self.received: list[int] = []  # task ids, in order
        self.arrived = asyncio.Event()
        self.open = 0  # requests being held now
        self.most_open = 0

    async def __call__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        _, headers = await read_head(reader)
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        self.received.append(orjson.loads(body)["taskId"])
        self.arrived.set()
        if self.hold:
            self.open += 1
            self.most_open = max(self.most_open, self.open)
            try:
                await self.release.wait()
            finally:
                self.open -= 1
        writer.write(f"HTTP/1.1 {self.status} X\r\nContent-Length: 0\r\n\r\n".encode())
        await writer.drain()


async def until(condition: object, what: str) -> None:
    """Wait (yielding to the loop) until ``condition()`` holds; fail after WAIT_S."""
    deadline = time.monotonic() + WAIT_S
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError(f"waited {WAIT_S} s for {what}")
        await asyncio.sleep(0.01)


def test_a_slow_receiver_of_one_account_does_not_delay_another_account() -> None:
    async def main() -> None:
        store, clock = open_store("memory://"), FakeClock()
        slow, quick = Hook(hold=True), Hook()
        async with TcpServer(slow) as slow_server, TcpServer(quick) as quick_server:
            a = await account(store, "a", clock())
            b = await account(store, "b", clock())
            await finished_with_callback(store, a, f"http://127.0.0.1:{slow_server.port}/",
                                         10, clock(), 1_000_000)
            [b_task] = await finished_with_callback(
                store, b, f"http://127.0.0.1:{quick_server.port}/", 1, clock(), 2_000_000)
            sender = OutboxSender(store, LOOPBACK, clock, timeout_s=WAIT_S * 3,
                                  concurrency=8, per_account=2)
            await sender.start()
            try:
                await asyncio.wait_for(quick.arrived.wait(), WAIT_S)
                assert quick.received == [b_task]
                await until(lambda: sender.delivered == 1, "b's delivery settled")
                assert slow.open == 2  # a's receiver still holds both of a's deliveries
                slow.release.set()
                await until(lambda: sender.delivered == 11, "a's deliveries")
                assert slow.most_open == 2
            finally:
                await sender.stop()
        assert await store.callback_counts() == {"pending": 0, "delivered": 11, "failed": 0}
    asyncio.run(main())


def test_failed_after_retries_is_visible_in_stats(tmp_path: Path) -> None:
    async def main() -> None:
        store, clock = open_store("memory://"), FakeClock()
        refusing = Hook(status=500)
        async with TcpServer(refusing) as server:
            a = await account(store, "a", clock())
            [task_id] = await finished_with_callback(
                store, a, f"http://127.0.0.1:{server.port}/", 1, clock(), 1_000_000)
            sender = OutboxSender(store, LOOPBACK, clock, retries=2, backoff_s=0.0)
            await sender.start()
            try:
                await until(lambda: sender.failed == 1, "the callback given up")
            finally:
                await sender.stop()
        assert refusing.received == [task_id] * 3  # the first attempt and two retries
        settings = load_settings(environ={}, overrides={"database_url": "memory://"})
        stats = await AdminService(store, clock, settings).stats()
        assert stats["callbacks"] == {"pending": 0, "failed": 1}
    asyncio.run(main())


def test_a_retry_waits_for_its_backoff() -> None:
    async def main() -> None:
        store, clock = open_store("memory://"), FakeClock()
        hook = Hook(status=500)
        async with TcpServer(hook) as server:
            a = await account(store, "a", clock())
            await finished_with_callback(store, a, f"http://127.0.0.1:{server.port}/", 1,
                                         clock(), 1_000_000)
            sender = OutboxSender(store, LOOPBACK, clock, retries=3, backoff_s=5.0,
                                  poll_s=0.01)
            await sender.start()
            try:
                await until(lambda: sender.retrying == 1, "the first attempt settled")
                assert await store.claim_callbacks(clock() + 4.9, 30, 10, 2) == []
                [row] = await store.claim_callbacks(clock() + 5, 30, 10, 2)
                assert (row.attempts, row.state) == (2, CallbackState.PENDING)
            finally:
                await sender.stop()
    asyncio.run(main())


def test_an_internal_callback_host_fails_without_connecting() -> None:
    async def main() -> None:
        store, clock = open_store("memory://"), FakeClock()
        hook = Hook()
        async with TcpServer(hook) as server:
            a = await account(store, "a", clock())
            await finished_with_callback(store, a, f"http://127.0.0.1:{server.port}/", 1,
                                         clock(), 1_000_000)
            sender = OutboxSender(store, AddressGuard(allow_private=False), clock)
            await sender.start()
            try:
                await until(lambda: sender.failed == 1, "the refusal")
            finally:
                await sender.stop()
        assert server.connections == 0
        assert (await store.callback_counts())["failed"] == 1
    asyncio.run(main())

