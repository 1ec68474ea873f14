"""Fixtures for driving the real, unmodified client libraries against a live capd.

Each library is pointed at capd through its own base-URL option where it has one; the
two exceptions (a hard-coded host, an https-only URL) are handled by the narrowest
override available, explained where it is made.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from capd.solving.ocr.base import Recogniser
from tests.helpers import FakeClock, LiveServer, make_settings

CERTS = Path(__file__).parent / "certs"
CA_BUNDLE = CERTS / "ca.pem"
PROXY_VARIABLES = ("HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY", "http_proxy", "https_proxy",
                   "all_proxy")


class WallClock(FakeClock):
    """The real time, still movable by ``advance``: the poll-rate limit (spec §4) must see
    each library's real polling rhythm, which a frozen clock would squeeze into one
    second."""

    def __init__(self) -> None:
        super().__init__(start=0.0)  # ``now`` holds the offset from the real time

    def __call__(self) -> float:
        with self._lock:
            return time.time() + self.now


@pytest.fixture
def clock() -> FakeClock:
    return WallClock()


@pytest.fixture
def backend(tmp_path: Path) -> str:
    """Wire compatibility does not depend on the store: SQLite alone (the API suites run
    every backend)."""
    return f"sqlite:///{tmp_path}/capd.db"


@pytest.fixture(autouse=True)
def no_outside_proxies(monkeypatch: pytest.MonkeyPatch) -> None:
    """requests honours proxy variables; loopback traffic must not leave through one."""
    for name in PROXY_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("NO_PROXY", "*")


class TlsLiveServer(LiveServer):
    """LiveServer over https, with the test certificate in ``certs/``."""

    def _scheme(self) -> str:
        return "https"

    def _tls_options(self) -> dict[str, Any]:
        return {"ssl_certfile": str(CERTS / "server.pem"),
                "ssl_keyfile": str(CERTS / "server-key.pem")}

    def _client_options(self) -> dict[str, Any]:
        return {"verify": ssl.create_default_context(cafile=str(CA_BUNDLE))}


@pytest.fixture
def tls_server(tmp_path: Path, engine: Recogniser, clock: FakeClock
               ) -> Iterator[TlsLiveServer]:
    server = TlsLiveServer(make_settings(tmp_path), clock)
    server.start(engine)
    yield server
    server.stop()


@pytest.fixture
def trust_test_ca(monkeypatch: pytest.MonkeyPatch) -> None:
    """Make requests trust the test CA the standard way (its REQUESTS_CA_BUNDLE)."""
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", str(CA_BUNDLE))


@pytest.fixture
def png_file(tmp_path: Path) -> Callable[[bytes], str]:
    """Write image bytes to a .png file; the path (for file-based client methods)."""
    def write(data: bytes) -> str:
        path = tmp_path / f"captcha-{len(list(tmp_path.glob('captcha-*')))}.png"
        path.write_bytes(data)
        return str(path)

    return write
