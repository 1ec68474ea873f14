"""Fixtures of the Store contract suite: one fresh store of each backend per test."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any, cast

import pytest

from capd.store import open_store
from capd.store.base import Store
from tests.store.contract import BACKENDS


class Recording:
    """A store that remembers which public methods a test used."""

    def __init__(self, store: Store) -> None:
        self._store = store
        self.used: set[str] = set()

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._store, name)
        if callable(value) and not name.startswith("_"):
            self.used.add(name)
        return value


@pytest.fixture(params=BACKENDS)
def location(request: Any, tmp_path: Path) -> str:
    """The URL of a fresh database of each backend."""
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'contract.db'}"
    return str(request.getfixturevalue("pg_url"))


def open_backend(location: str) -> Store:
    """The contract suite drives time by hand (``now`` passed to every call): on
    PostgreSQL too, leases and deadlines follow it (tests/store/test_database_clock.py
    covers the database's own clock)."""
    return open_store(location, database_clock=False)


@pytest.fixture
def run(location: str, request: pytest.FixtureRequest
        ) -> Iterator[Callable[[Callable[[Store], Awaitable[Any]]], Any]]:
    """Run an async test body against a freshly migrated store of each backend; then check
    that the body called every Store method its ``@covers`` claims."""
    claimed = set(getattr(request.function, "covers", ()))

    def go(body: Callable[[Store], Awaitable[Any]]) -> Any:
        recording = Recording(open_backend(location))
        store = cast(Store, recording)

        async def main() -> Any:
            await store.migrate()
            try:
                return await body(store)
            finally:
                await store.close()
        result = asyncio.run(main())
        missing = claimed - recording.used
        assert not missing, f"the test claims to cover {sorted(missing)} but never calls them"
        return result
    yield go
