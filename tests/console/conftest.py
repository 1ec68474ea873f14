"""The web console in a real browser: Debian's chromium driven by playwright (no browser
download), against a live capd on loopback (SQLite; tests/console/test_http.py covers
sessions on both backends)."""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from capd.solving.ocr.base import Recogniser
from tests.helpers import FakeClock, LiveServer, make_settings

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


@pytest.fixture
def backend(tmp_path: Any) -> str:
    return f"sqlite:///{tmp_path}/capd.db"


class ConsoleServer(LiveServer):
    """A live server whose admin helpers run their event loop on another thread: the
    playwright driver keeps one running on the test's thread."""

    def admin(self, fn: Any) -> Any:
        with ThreadPoolExecutor(1) as pool:
            return pool.submit(super().admin, fn).result()


@pytest.fixture
def make_server(tmp_path: Any, engine: Recogniser, clock: FakeClock, backend: str
                ) -> Iterator[Callable[..., LiveServer]]:
    servers: list[LiveServer] = []

    def start(**overrides: Any) -> LiveServer:
        server = ConsoleServer(make_settings(tmp_path, database_url=backend, **overrides),
                               clock)
        server.start(engine)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


@pytest.fixture(scope="package")
def browser() -> Iterator[Any]:
    """One chromium for this package, closed when the package ends: playwright's driver
    keeps an event loop running on the test thread while it is open."""
    if not os.path.exists(CHROMIUM):
        pytest.skip("Debian's chromium is not installed (./run test installs it)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        chromium = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def new_page(browser: Any) -> Iterator[Callable[[], Any]]:
    """Pages in fresh browser contexts (each its own cookie jar); CSP violations and
    script errors reported by the browser fail the test."""
    contexts: list[Any] = []
    problems: list[str] = []

    def make() -> Any:
        context = browser.new_context()
        contexts.append(context)
        page = context.new_page()
        page.set_default_timeout(15_000)
        page.on("console", lambda msg: problems.append(msg.text)
                if msg.type == "error" else None)
        page.on("pageerror", lambda exc: problems.append(str(exc)))
        return page

    yield make
    for context in contexts:
        context.close()
    assert not [p for p in problems if "Content Security Policy" in p], problems


def admin_token(server: LiveServer, name: str = "ops") -> str:
    token = secrets.token_hex(32)
    server.admin(lambda store: store.create_admin_token(
        hashlib.sha256(token.encode()).hexdigest(), name, server.clock()))
    return token


def sign_in(page: Any, server: LiveServer, key: str) -> None:
    page.goto(f"{server.url}/console/")
    page.fill("#key", key)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def sign_in_admin(page: Any, server: LiveServer, token: str) -> None:
    page.goto(f"{server.url}/console/admin")
    page.fill("#token", token)
    page.click("button[type=submit]")
    page.wait_for_load_state()


def csrf_of(page: Any) -> str:
    match = re.search(r'name="csrf" value="([^"]+)"', page.content())
    assert match, "no CSRF field on the page"
    return match.group(1)


def cookies_for(page: Any) -> dict[str, str]:
    return {c["name"]: c["value"] for c in page.context.cookies()}
