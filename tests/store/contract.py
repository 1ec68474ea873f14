"""Shared pieces of the Store contract suite: the clock, sample tasks, and the registry of
which Store methods each contract test covers (``covers``)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from typing import Any, TypeVar

from capd.store.base import NewTask, Store

NOW = 1_800_000_000.0
BACKENDS = ["memory", "sqlite", "postgres"]
PERSISTENT = ["sqlite", "postgres"]  # backends another connection or process can open

# Store method -> the contract tests that exercise it (filled at import by ``covers``)
COVERAGE: dict[str, set[str]] = {}

_Test = TypeVar("_Test", bound=Callable[..., Any])


def covers(*methods: str) -> Callable[[_Test], _Test]:
    """Mark a contract test as covering these Store methods. The ``run`` fixture checks
    that the test really calls each of them; tests/store/test_coverage.py checks that
    every method of the protocol is claimed by some test."""
    def mark(test: _Test) -> _Test:
        test.covers = methods  # type: ignore[attr-defined]
        for method in methods:
            COVERAGE.setdefault(method, set()).add(f"{test.__module__}.{test.__name__}")
        return test
    return mark


def protocol_methods() -> set[str]:
    """The public method names of the Store protocol."""
    return {name for name, value in vars(Store).items()
            if callable(value) and not name.startswith("_")}


def counter_ids(start: int = 1000) -> Callable[[], int]:
    it = itertools.count(start)
    return lambda: next(it)


def new_task(account_id: int, price: int = 100, deadline: float = NOW + 60,
             task_type: str = "ImageToTextTask", created: float = NOW) -> NewTask:
    return NewTask(account_id=account_id, type=task_type, payload={"body": "x"},
                   options={"nocache": False}, price_units=price, created_at=created,
                   deadline_at=deadline, client_ip="198.51.100.1")


async def funded(store: Store, units: int = 1000, key: str = "a" * 32) -> int:
    account_id = await store.create_account("t", key, NOW)
    if units:
        await store.adjust_balance(account_id, units, "topup", "test", "", NOW)
    return account_id
