from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from capd.solving.ocr.base import Recogniser
from capd.solving.ocr.ddddocr_engine import DdddOcrEngine
from capd.store import open_store
from capd.store.base import Store
from tests.helpers import FakeClock, LiveServer, make_settings
from tests.pgcluster import PgCluster, wait_until_ready


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    """One throwaway PostgreSQL cluster for the whole run, started on first use."""
    cluster = PgCluster()
    wait_until_ready(cluster.start())
    yield cluster
    cluster.stop()


@pytest.fixture
def pg_url(pg_cluster: PgCluster, request: pytest.FixtureRequest) -> str:
    """A fresh, empty schema on the session's cluster (its URL sets the search_path)."""
    pg_url.counter = getattr(pg_url, "counter", 0) + 1  # type: ignore[attr-defined]
    return pg_cluster.create_schema(f"t{pg_url.counter}")  # type: ignore[attr-defined]


@pytest.fixture(scope="session")
def engine() -> Recogniser:
    """One real recogniser for the whole run (loading it takes a moment; it is thread-safe)."""
    return DdddOcrEngine()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def store() -> Iterator[Store]:
    """A fresh, migrated in-memory store for direct unit tests (no server, no file): the one
    place that picks the backend of tests/service and friends. The contract suite
    (tests/store) holds MemoryStore to the same behaviour as SQLite and PostgreSQL."""
    opened = open_store("memory://")
    asyncio.run(opened.migrate())
    yield opened
    asyncio.run(opened.close())


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest) -> str:
    """The database URL of a fresh store of each backend: API tests run against both."""
    if request.param == "sqlite":
        return f"sqlite:///{request.getfixturevalue('tmp_path')}/capd.db"
    return str(request.getfixturevalue("pg_url"))


@pytest.fixture
def make_server(tmp_path: Any, engine: Recogniser, clock: FakeClock, backend: str
                ) -> Iterator[Callable[..., LiveServer]]:
    """Start a live capd with settings overrides: ``make_server(max_polls_per_task=3)``."""
    servers: list[LiveServer] = []

    def start(recogniser: Recogniser | None = None, app_kwargs: dict[str, Any] | None = None,
              **overrides: Any) -> LiveServer:
        settings = make_settings(tmp_path, database_url=backend, **overrides)
        server = LiveServer(settings, clock)
        server.start(recogniser or engine, **(app_kwargs or {}))
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture
def server(make_server: Callable[..., LiveServer]) -> LiveServer:
    return make_server()


@pytest.fixture
def key(server: LiveServer) -> str:
    return server.new_account("10")
