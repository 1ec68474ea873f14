"""Building blocks for direct unit tests of the service layer: no server, no sockets.

Everything is injected: the ``store`` fixture, a FakeClock, guards that answer from a
set instead of DNS, a counter for task ids.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Coroutine
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import pytest

from capd.config import Settings, load_settings
from capd.domain.keys import new_key
from capd.domain.money import to_units
from capd.errors import CapdError
from capd.metrics import Metrics
from capd.service import Service
from capd.solving.dispatch import Dispatcher
from capd.store.base import Store
from capd.workers import WorkerDesk
from tests.helpers import FakeClock

T = TypeVar("T")
PUBLIC_IP = "203.0.113.7"
OTHER_IP = "198.51.100.9"


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def refused_code(coro: Coroutine[Any, Any, Any]) -> str:
    """The code of the CapdError the call raises (fails the test when it raises none)."""
    with pytest.raises(CapdError) as caught:
        run(coro)
    return caught.value.code


class FakeGuard:
    """The outbound guard without DNS: refuses the hosts it is given, records questions."""

    def __init__(self, refused: set[str] | None = None) -> None:
        self.refused = refused or set()
        self.asked: list[str] = []

    async def allows(self, host: str) -> bool:
        self.asked.append(host)
        return host not in self.refused


def settings(tmp_path: Path, **overrides: Any) -> Settings:
    return load_settings(environ={}, overrides={
        "database_url": f"sqlite:///{tmp_path}/unit.db", "proxy_preflight": False,
        **overrides})


@dataclass
class World:
    """A Service and WorkerDesk wired to one store, clock and settings."""

    store: Store
    clock: FakeClock
    settings: Settings
    service: Service
    desk: WorkerDesk
    dispatcher: Dispatcher
    proxy_guard: FakeGuard
    callback_guard: FakeGuard

    def account(self, balance: str = "10") -> str:
        """A new account holding ``balance`` USD; returns its key."""
        key = new_key()

        async def create() -> None:
            account_id = await self.store.create_account("unit", key, self.clock())
            if Decimal(balance):
                await self.store.adjust_balance(account_id, to_units(Decimal(balance)),
                                                "topup", "test", "opening", self.clock())

        run(create())
        return key

    def account_id(self, key: str) -> int:
        async def read() -> int:
            account = await self.store.account_for_key(key)
            assert account is not None
            return account.id

        return run(read())

    def money(self, key: str) -> tuple[int, int]:
        """(balance, reserved) units of the account holding ``key``."""
        async def read() -> tuple[int, int]:
            account = await self.store.account_for_key(key)
            assert account is not None
            return account.balance_units, account.reserved_units

        return run(read())


def world(store: Store, clock: FakeClock, tmp_path: Path, **overrides: Any) -> World:
    s = settings(tmp_path, **overrides)
    dispatcher = Dispatcher(store, clock, s)
    proxy_guard, callback_guard = FakeGuard({"10.0.0.1"}), FakeGuard({"internal.test"})
    ids = itertools.count(1_000_001)
    service = Service(s, store, dispatcher, clock, Metrics(), proxy_guard, callback_guard,
                      new_id=lambda: next(ids))
    desk = WorkerDesk(store, dispatcher, clock, s, service.finish_task,
                      new_secret=lambda: "secret", monotonic=clock)
    return World(store, clock, s, service, desk, dispatcher, proxy_guard, callback_guard)
