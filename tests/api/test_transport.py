"""Transport rules (spec §1) and the operator endpoints."""

from __future__ import annotations

from collections.abc import Iterator

import orjson
import pytest

from capd.api.capmonster import METHODS
from tests.helpers import LiveServer, image_task

BIG = 1024 * 1024 + 1


@pytest.mark.parametrize("path", ["/nope", "/createtask", "/getBalance/extra", "/"])
def test_unknown_method(server: LiveServer, path: str) -> None:
    response = server.client.post(path, json={})
    assert response.status_code == 200
    assert response.json()["errorCode"] == "ERROR_NO_SUCH_METHOD"


def test_oversized_create_body_is_too_big(server: LiveServer, key: str) -> None:
    response = server.client.post("/createTask", content=b"{" + b" " * BIG + b"}")
    assert response.status_code == 200
    assert response.json() == {"errorId": 1, "taskId": 0,
                               "errorCode": "ERROR_TOO_BIG_CAPTCHA_FILESIZE",
                               "errorDescription": response.json()["errorDescription"]}


def test_oversized_body_elsewhere_is_413(server: LiveServer) -> None:
    response = server.client.post("/getBalance", content=b" " * BIG)
    assert response.status_code == 413


def test_oversized_streamed_body_without_length(server: LiveServer) -> None:
    def chunks() -> Iterator[bytes]:
        for _ in range(17):
            yield b" " * 65536

    response = server.client.post("/createTask", content=chunks())
    assert response.json()["errorCode"] == "ERROR_TOO_BIG_CAPTCHA_FILESIZE"
    # and the server still serves others
    assert server.client.get("/healthz").status_code == 200


def test_body_just_under_the_limit_is_parsed(server: LiveServer, key: str) -> None:
    payload = orjson.dumps({"clientKey": key, "task": image_task(), "pad": ""})
    padded = payload[:-2] + b" " * (1024 * 1024 - len(payload)) + payload[-2:]
    response = server.client.post("/createTask", content=padded)
    assert response.json()["errorId"] == 0


def test_healthz(server: LiveServer) -> None:
    assert server.client.get("/healthz").json() == {"status": "ok"}


def test_user_agent_is_plain_text(server: LiveServer) -> None:
    response = server.client.get("/api/useragent/actual")
    assert response.headers["content-type"].startswith("text/plain")
    assert "Chrome/" in response.text and response.text.startswith("Mozilla/5.0 (Windows")


def test_metrics_are_prometheus_text_without_secrets(server: LiveServer, key: str) -> None:
    server.call("getBalance", {"clientKey": key})
    server.call("getBalance", {"clientKey": "f" * 32})
    text = server.client.get("/metrics").text
    assert 'capd_requests_total{method="getBalance",outcome="ok"} 1' in text
    assert 'outcome="ERROR_KEY_DOES_NOT_EXIST"' in text
    assert "# TYPE capd_requests_total counter" in text
    assert key not in text and "f" * 32 not in text


def test_openapi_describes_every_public_method(server: LiveServer) -> None:
    doc = server.client.get("/openapi.json").json()
    assert doc["openapi"].startswith("3.")
    for method in METHODS:
        assert f"/{method}" in doc["paths"], method


def test_errors_carry_string_code_and_description(server: LiveServer) -> None:
    for method in METHODS:
        answer = server.call(method, {"clientKey": "nope"})
        assert answer["errorId"] == 1
        assert isinstance(answer["errorCode"], str) and isinstance(answer["errorDescription"],
                                                                   str)
