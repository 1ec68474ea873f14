"""Pick-up without a restart: a module imported while `capd serve` (built-in OCR) or a
`capd worker` process is running reads that module's tasks within the poll interval,
named by capMonsterModule or by the key option; other tasks keep the general engine."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import b64, captcha_png, free_port
from tests.processes import Processes, capd_cli, post

pytestmark = pytest.mark.slow

TEXT = "fbte"  # letters the general engine (ddddocr) reads exactly; the tiny module has digits only
POLL = {"CAPD_MODULES_POLL_S": "0.5", "CAPD_OCR_ENGINE": "ddddocr", "CAPD_OCR_THREADS": "1",
        "CAPD_MAX_POLLS_PER_S": "50", "CAPD_IMAGE_DEADLINE_S": "60"}


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    procs.stop_all()


def solve(url: str, client_key: str, module: str | None = None) -> dict[str, Any]:
    task: dict[str, Any] = {"type": "ImageToTextTask", "body": b64(captcha_png(TEXT))}
    if module:
        task["capMonsterModule"] = module
    deadline = time.monotonic() + 60
    while True:  # a worker process that has just started may not be leasing yet
        created = post(url, "createTask", {"clientKey": client_key, "task": task})
        if created.get("errorCode") != "ERROR_NO_SLOT_AVAILABLE":
            break
        assert time.monotonic() < deadline, "no worker came"
        time.sleep(0.1)
    assert created["errorId"] == 0, created
    while True:
        answer = post(url, "getTaskResult", {"clientKey": client_key,
                                             "taskId": created["taskId"]})
        if answer.get("status") != "processing":
            return answer
        assert time.monotonic() < deadline, "task not finished"
        time.sleep(0.05)


def read_by_module(answer: dict[str, Any]) -> bool:
    """The tiny module cannot answer the letters: digits, or unsolvable."""
    if answer["errorId"]:
        return bool(answer["errorCode"] == "ERROR_CAPTCHA_UNSOLVABLE")
    return bool(answer["solution"]["text"] != TEXT)


def import_and_wait(db: str, lib: Path, module_path: Path, url: str, key: str) -> None:
    assert solve(url, key, "tiny")["solution"]["text"] == TEXT  # unknown yet: general
    capd_cli(db, "module", "import", str(module_path), CAPD_MODULES_DIR=str(lib))
    deadline = time.monotonic() + 30
    while not read_by_module(solve(url, key, "tiny")):
        assert time.monotonic() < deadline, "module not picked up"
    assert read_by_module(solve(url, f"{key}__tiny"))  # the key option names it too
    assert solve(url, key)["solution"]["text"] == TEXT  # no module: general engine
    assert solve(url, key, "yandex")["solution"]["text"] == TEXT  # CapMonster's: general


def _setup(tmp_path: Path, module_file: bytes) -> tuple[str, Path, Path, str]:
    db = f"sqlite:///{tmp_path}/capd.db"
    lib = tmp_path / "lib"
    module_path = tmp_path / "tiny.capdmodule"
    module_path.write_bytes(module_file)
    key = capd_cli(db, "account", "create", "--balance", "5").strip().splitlines()[-1]
    return db, lib, module_path, key


def test_running_server_picks_up_an_imported_module(processes: Processes, tmp_path: Path,
                                                    module_file: bytes) -> None:
    db, lib, module_path, key = _setup(tmp_path, module_file)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = processes.start("serve", ["--db", db, "serve", "--port", str(port)],
                           CAPD_MODULES_DIR=str(lib), **POLL)
    processes.wait_healthy(url, proc)
    import_and_wait(db, lib, module_path, url, key)


def test_running_worker_picks_up_an_imported_module(processes: Processes, tmp_path: Path,
                                                    module_file: bytes) -> None:
    db, lib, module_path, key = _setup(tmp_path, module_file)
    token = capd_cli(db, "worker-token", "create", "--types",
                     "ImageToTextTask").strip().splitlines()[-1]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    # the server has no built-in OCR and its own (empty) modules directory: only the
    # worker can have read with the module
    proc = processes.start("serve", ["--db", db, "serve", "--port", str(port)],
                           CAPD_BUILTIN_OCR="false", CAPD_MODULES_DIR=str(tmp_path / "none"),
                           **POLL)
    processes.wait_healthy(url, proc)
    processes.start("worker", ["worker", "--url", url, "--token", token, "--threads", "1"],
                    CAPD_MODULES_DIR=str(lib), **POLL)
    import_and_wait(db, lib, module_path, url, key)
