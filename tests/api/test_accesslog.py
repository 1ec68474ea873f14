"""The access log: a line per request when ``access_log`` is on, and never a key, token or
image, wherever the client put it (JSON body, form body, query string, path)."""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from capd.api.accesslog import LOGGER_NAME, AccessLogMiddleware, log_path
from capd.config import load_settings
from capd.solving.ocr.base import Recogniser
from tests.helpers import FakeClock, LiveServer, b64, captcha_png, make_settings

LINE = re.compile(r"(\S+Z) (\S+) ([A-Z]+) (\S+) (\d{3}) (\d+\.\d)ms")


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


@pytest.fixture
def log() -> Iterator[Lines]:
    """The lines the app's access logger writes."""
    handler = Lines()
    logger = logging.getLogger(LOGGER_NAME)
    logger.addHandler(handler)
    yield handler
    logger.removeHandler(handler)


def _server(tmp_path: Path, engine: Recogniser, clock: FakeClock, **overrides: Any
            ) -> Iterator[LiveServer]:
    server = LiveServer(make_settings(tmp_path, **overrides), clock)
    server.start(engine)
    yield server
    server.stop()


@pytest.fixture
def server(tmp_path: Path, engine: Recogniser, clock: FakeClock) -> Iterator[LiveServer]:
    yield from _server(tmp_path, engine, clock, access_log=True)


def only_line(log: Lines) -> re.Match[str]:
    assert len(log.lines) == 1, log.lines
    match = LINE.fullmatch(log.lines[0])
    assert match, log.lines
    return match


def test_one_line_per_request_with_its_fields(server: LiveServer, log: Lines) -> None:
    assert server.client.get("/healthz").status_code == 200
    _, client, method, path, status, _ = only_line(log).groups()
    assert (client, method, path, status) == ("127.0.0.1", "GET", "/healthz", "200")


def test_the_status_is_the_one_sent(server: LiveServer, log: Lines) -> None:
    too_big = b"x" * (server.settings.max_body_bytes + 1)
    server.client.post("/getBalance", content=too_big)
    assert only_line(log).group(5) == "413"


def test_key_in_json_body_is_never_logged(server: LiveServer, log: Lines) -> None:
    key = server.new_account("1")
    assert server.call("getBalance", {"clientKey": key})["errorId"] == 0
    assert only_line(log).group(4) == "/getBalance"
    assert key not in log.lines[0]


def test_key_and_image_in_create_task_are_never_logged(server: LiveServer, log: Lines) -> None:
    key = server.new_account("1")
    image = b64(captcha_png("4821"))
    answer = server.call("createTask", {"clientKey": key,
                                        "task": {"type": "ImageToTextTask", "body": image}})
    assert answer["errorId"] == 0, answer
    line = only_line(log).string
    assert key not in line and image[:40] not in line


def test_key_in_query_string_is_never_logged(server: LiveServer, log: Lines) -> None:
    key = server.new_account("1")
    response = server.client.get(f"/res.php?key={key}&action=getbalance")
    assert response.status_code == 200 and response.text != "ERROR_KEY_DOES_NOT_EXIST"
    match = only_line(log)
    assert match.group(4) == "/res.php"
    assert key not in log.lines[0] and "?" not in log.lines[0]


def test_key_and_image_in_form_body_are_never_logged(server: LiveServer, log: Lines) -> None:
    key = server.new_account("1")
    image = b64(captcha_png("4821"))
    response = server.client.post("/in.php", data={"key": key, "method": "base64",
                                                   "body": image})
    assert response.text.startswith("OK|"), response.text
    assert only_line(log).group(4) == "/in.php"
    assert key not in log.lines[0] and image[:40] not in log.lines[0]


def test_worker_token_in_body_is_never_logged(server: LiveServer, log: Lines) -> None:
    token = server.new_worker_token()
    server.client.post("/worker/v1/lease", json={"workerToken": token, "types": ["ImageToTextTask"]})
    assert token not in only_line(log).string


def test_key_in_path_is_masked(server: LiveServer, log: Lines) -> None:
    key = server.new_account("1")
    server.client.get(f"/getBalance/{key}")
    path = only_line(log).group(4)
    assert key not in log.lines[0] and path == "/getBalance/<masked>"


def test_access_log_is_off_by_default(tmp_path: Path, engine: Recogniser, clock: FakeClock,
                                      log: Lines) -> None:
    for server in _server(tmp_path, engine, clock):
        assert server.client.get("/healthz").status_code == 200
    assert log.lines == []


# -- the middleware alone ------------------------------------------------------------------------
def test_a_failing_app_is_logged_as_500() -> None:
    import asyncio

    async def broken(scope: Any, receive: Any, send: Any) -> None:
        raise RuntimeError("boom")

    handler = Lines()
    logger = logging.getLogger("test.accesslog.failing")
    logger.setLevel(logging.INFO)
    logger.addHandler(handler)
    ticks = iter([10.0, 10.25])
    middleware = AccessLogMiddleware(broken, logger=logger, clock=lambda: 0.0,
                                     timer=lambda: next(ticks))
    scope = {"type": "http", "method": "POST", "path": "/createTask", "client": ("::1", 5)}
    with pytest.raises(RuntimeError):
        asyncio.run(middleware(scope, None, None))  # type: ignore[arg-type]
    logger.removeHandler(handler)
    assert handler.lines == ["1970-01-01T00:00:00.000Z ::1 POST /createTask 500 250.0ms"]


def test_log_path_escapes_and_cuts() -> None:
    assert log_path("/a b\n") == "/a%20b%0A"
    assert len(log_path("/" + "x" * 1000)) == 200


# -- the setting ----------------------------------------------------------------------------------
def test_access_log_setting_from_env() -> None:
    assert load_settings(environ={"CAPD_ACCESS_LOG": "1"}).access_log is True
    assert load_settings(environ={}).access_log is False


def test_access_log_setting_from_toml_table(tmp_path: Path) -> None:
    config = tmp_path / "capd.toml"
    config.write_text("[capd]\naccess_log = true\n")
    assert load_settings(config, environ={}).access_log is True
