from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from capd.solving.ocr.base import Recogniser
from capd.solving.ocr.ddddocr_engine import DdddOcrEngine
from tests.helpers import FakeClock, LiveServer, make_settings


@pytest.fixture(scope="session")
def engine() -> Recogniser:
    """One real recogniser for the whole run (loading it takes a moment; it is thread-safe)."""
    return DdddOcrEngine()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def make_server(tmp_path: Any, engine: Recogniser, clock: FakeClock
                ) -> Iterator[Callable[..., LiveServer]]:
    """Start a live capd with settings overrides: ``make_server(max_polls_per_task=3)``."""
    servers: list[LiveServer] = []

    def start(recogniser: Recogniser | None = None, app_kwargs: dict[str, Any] | None = None,
              **overrides: Any) -> LiveServer:
        settings = make_settings(tmp_path, **overrides)
        server = LiveServer(settings, clock, tmp_path / "capd.db")
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
