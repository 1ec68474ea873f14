"""Issue 13, finding 3: hosts are normalised (capd.domain.hosts) before any comparison:
the domain blocklist, websiteURL, the proxy address and proxy bans."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from capd.admin import AdminService
from capd.service import CreateTaskRequest
from capd.store.base import Store
from capd.workers import CompleteRequest
from tests.helpers import SITEKEY, FakeClock
from tests.service.kit import PUBLIC_IP, World, refused_code, run, world
from tests.service.test_worker_desk import lease_request, token

TYPE = "RecaptchaV2TaskProxyless"


@pytest.fixture
def w(store: Store, clock: FakeClock, tmp_path: Path) -> World:
    built = world(store, clock, tmp_path)
    run(built.store.note_workers([TYPE, "RecaptchaV2Task"], clock()))
    return built


def task(url: str = "https://example.com/", **extra: Any) -> dict[str, Any]:
    return {"type": TYPE, "websiteURL": url, "websiteKey": SITEKEY, **extra}


def code(w: World, body: dict[str, Any]) -> str:
    return refused_code(w.service.create_task(CreateTaskRequest(w.account(), PUBLIC_IP, body)))


@pytest.mark.parametrize("url", ["https://ｅxample.com/", "https://example%2ecom/",
                                 "https://example。com/", "https://example.com%2e/",
                                 "https://EXAMPLE.com./", "https://www.ｅxample.com/"])
def test_blocklist_matches_every_spelling_of_the_host(w: World, url: str) -> None:
    run(w.store.blocklist_add("example.com", w.clock()))
    assert code(w, task(url)) == "ERROR_DOMAIN_NOT_ALLOWED"


def test_blocklist_entries_are_stored_normalised(w: World) -> None:
    admin = AdminService(w.store, w.clock, w.settings)
    assert asyncio.run(admin.blocklist_add("ＥＸＡＭＰＬＥ。com")) is True
    assert asyncio.run(admin.blocklist()) == ["example.com"]
    assert code(w, task()) == "ERROR_DOMAIN_NOT_ALLOWED"


@pytest.mark.parametrize("url", ["https://exa mple.com/", "https://a..b/", "https://-x.com/"])
def test_odd_website_host_is_a_bad_parameter(w: World, url: str) -> None:
    assert code(w, task(url)) == "ERROR_BAD_PARAMETERS"


@pytest.mark.parametrize("address", ["exa mple.com", "a..b", "bad_host-.com"])
def test_odd_proxy_host_is_a_bad_parameter(w: World, address: str) -> None:
    body = task(proxyType="http", proxyAddress=address, proxyPort=8080)
    assert code(w, body) == "ERROR_BAD_PARAMETERS"


@pytest.mark.parametrize("spelling", ["127.1", "2130706433", "0x7f.1", "0177.0.0.1",
                                      "::ffff:127.0.0.1", "127.0.0.1"])
def test_proxy_ban_covers_every_spelling_of_the_address(w: World, spelling: str) -> None:
    raw = token(w)
    key = w.account()
    proxy = {"proxyType": "http", "proxyPort": 18203}
    first = {**task(), "type": "RecaptchaV2Task", "proxyAddress": "127.0.0.1", **proxy}
    w.proxy_guard.refused.clear()
    run(w.service.create_task(CreateTaskRequest(key, PUBLIC_IP, first)))
    [lease] = run(w.desk.lease(lease_request(raw, types=("RecaptchaV2Task",))))
    run(w.desk.complete(CompleteRequest(raw, lease.lease_id, None, "ERROR_PROXY_BANNED")))
    again = {**first, "proxyAddress": spelling}
    assert refused_code(w.service.create_task(CreateTaskRequest(key, PUBLIC_IP, again))) == (
        "ERROR_PROXY_BANNED")
