"""The one error pipeline (capd.api.errors): a store outage and an unexpected exception
answer in each door's dialect — CapMonster JSON, 2captcha text and json=1, the worker
protocol — from handlers registered once on the app."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from capd.api.app import create_app
from capd.store.base import Store, StoreUnavailable
from tests.helpers import FakeClock, make_settings

KEY = "ab" * 16


class Client:
    """The app in this thread through httpx's ASGI transport (no lifespan: the store
    fixture is migrated already, and nothing needs to run in the background)."""

    def __init__(self, app: Any) -> None:
        self.transport = httpx.ASGITransport(app, raise_app_exceptions=False,
                                             client=("203.0.113.7", 5555))

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            async with httpx.AsyncClient(transport=self.transport,
                                         base_url="http://capd.test") as client:
                return await client.request(method, url, **kwargs)

        return asyncio.run(go())

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)


@pytest.fixture
def client(store: Store, clock: FakeClock, tmp_path: Path) -> Iterator[Client]:
    app = create_app(make_settings(tmp_path, builtin_ocr=False), store=store, clock=clock)
    app.state.ready = True
    yield Client(app)


def fail_with(store: Store, monkeypatch: pytest.MonkeyPatch, exc: Exception) -> None:
    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise exc

    monkeypatch.setattr(store, "caller_for_key", broken)
    monkeypatch.setattr(store, "worker_token", broken)


OUTAGE = StoreUnavailable("database is locked")  # what a backend raises for its outages
BUG = RuntimeError("a bug")


@pytest.mark.parametrize(("exc", "status", "code"), [
    (OUTAGE, 503, "ERROR_SERVICE_UNAVAILABLE"), (BUG, 500, "ERROR_INTERNAL")])
def test_json_door_renders_outage_and_bug(client: Client, store: Store,
                                          monkeypatch: pytest.MonkeyPatch, exc: Exception,
                                          status: int, code: str) -> None:
    fail_with(store, monkeypatch, exc)
    for method in ("getBalance", "createTask"):
        answer = client.post(f"/{method}", json={"clientKey": KEY, "task": {}})
        assert answer.status_code == status
        assert answer.json() == {"errorId": 1, "errorCode": code,
                                 "errorDescription": answer.json()["errorDescription"]}


@pytest.mark.parametrize(("exc", "status", "code"), [
    (OUTAGE, 503, "ERROR_SERVICE_UNAVAILABLE"), (BUG, 500, "ERROR_INTERNAL")])
def test_twocaptcha_door_renders_outage_and_bug(client: Client, store: Store,
                                                monkeypatch: pytest.MonkeyPatch,
                                                exc: Exception, status: int, code: str) -> None:
    fail_with(store, monkeypatch, exc)
    text = client.get("/res.php", params={"key": KEY, "action": "getbalance"})
    assert (text.status_code, text.text) == (status, code)
    as_json = client.get("/res.php", params={"key": KEY, "action": "getbalance", "json": "1"})
    assert (as_json.status_code, as_json.json()) == (status, {"status": 0, "request": code})


def test_worker_door_renders_a_bug(client: Client, store: Store,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    fail_with(store, monkeypatch, BUG)
    answer = client.post("/worker/v1/extend", json={"workerToken": "a" * 48, "leaseId": "1.x"})
    assert (answer.status_code, answer.json()["errorCode"]) == (500, "ERROR_INTERNAL")


def test_failures_count_in_the_request_metric(client: Client, store: Store,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    fail_with(store, monkeypatch, OUTAGE)
    client.post("/getBalance", json={"clientKey": KEY})
    client.get("/in.php", params={"key": KEY, "method": "base64"})
    metrics = client.get("/metrics").text
    assert 'capd_requests_total{method="getBalance",outcome="ERROR_SERVICE_UNAVAILABLE"} 1' in (
        metrics)
    assert 'capd_requests_total{method="in.php",outcome="ERROR_SERVICE_UNAVAILABLE"} 1' in (
        metrics)


def test_api_refusal_keeps_http_200_and_create_adds_task_id(client: Client) -> None:
    answer = client.post("/createTask", json={"clientKey": KEY, "task": {"type": "x"}})
    assert answer.status_code == 200
    assert answer.json()["errorCode"] == "ERROR_KEY_DOES_NOT_EXIST"
    assert answer.json()["taskId"] == 0


def test_unknown_path_is_no_such_method(client: Client) -> None:
    answer = client.post("/nope", json={})
    assert (answer.status_code, answer.json()["errorCode"]) == (200, "ERROR_NO_SUCH_METHOD")
