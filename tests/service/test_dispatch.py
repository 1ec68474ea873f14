"""The Dispatcher (spec §4 capacity, §7 serving): which types can be taken now."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from capd.solving.dispatch import Dispatcher
from capd.store.base import NewTask, Store
from tests.helpers import FakeClock
from tests.service.kit import refused_code, run, settings

TYPE = "RecaptchaV2TaskProxyless"


@pytest.fixture
def dispatcher(store: Store, clock: FakeClock, tmp_path: Path) -> Dispatcher:
    return Dispatcher(store, clock, settings(tmp_path, worker_seen_window_s=60,
                                             queue_depth_limit=2))


def test_type_nobody_serves_has_no_slot(dispatcher: Dispatcher) -> None:
    assert refused_code(dispatcher.check_capacity(TYPE)) == "ERROR_NO_SLOT_AVAILABLE"


def test_builtin_solver_serves_its_type(dispatcher: Dispatcher) -> None:
    dispatcher.attach("ImageToTextTask")
    run(dispatcher.check_capacity("ImageToTextTask"))
    dispatcher.detach("ImageToTextTask")
    assert refused_code(dispatcher.check_capacity("ImageToTextTask")) == (
        "ERROR_NO_SLOT_AVAILABLE")


def test_worker_serves_its_type_for_the_seen_window(dispatcher: Dispatcher, store: Store,
                                                     clock: FakeClock) -> None:
    run(store.note_workers([TYPE], clock()))
    run(dispatcher.check_capacity(TYPE))
    clock.advance(61)
    assert refused_code(dispatcher.check_capacity(TYPE)) == "ERROR_NO_SLOT_AVAILABLE"


def test_full_queue_has_no_slot(dispatcher: Dispatcher, store: Store, clock: FakeClock,
                                tmp_path: Path) -> None:
    dispatcher.attach("ImageToTextTask")
    account = run(store.create_account("q", "a" * 32, clock()))
    run(store.adjust_balance(account, 10**8, "topup", "test", "", clock()))
    ids = iter(range(5_000_000, 5_000_010))
    for _ in range(2):
        run(store.create_task(NewTask(account, "ImageToTextTask", {}, {}, 1, clock(),
                                      clock() + 60, "203.0.113.7"), lambda: next(ids)))
    assert refused_code(dispatcher.check_capacity("ImageToTextTask")) == (
        "ERROR_NO_SLOT_AVAILABLE")


def test_notify_wakes_a_waiter_of_that_type(dispatcher: Dispatcher) -> None:
    async def go() -> bool:
        waiter = dispatcher.waiter([TYPE])
        dispatcher.notify(TYPE)
        await dispatcher.wait(waiter, 5)
        return waiter.done() and not waiter.cancelled()

    assert asyncio.run(go())


def test_notify_of_another_type_leaves_the_waiter(dispatcher: Dispatcher) -> None:
    async def go() -> bool:
        waiter = dispatcher.waiter([TYPE])
        dispatcher.notify("ImageToTextTask")
        done = waiter.done()
        dispatcher.forget(waiter)
        return done

    assert not asyncio.run(go())
