"""The human fallback end to end with real processes (issue 15): ``capd serve`` with
``human_fallback`` on and its built-in OCR, a stored module, and an external worker as a
separate process speaking the worker protocol over loopback (tests/human_worker.py). A
task naming the module that the built-in reading cannot pass (recognizingThreshold 100)
goes to the worker instead of failing: the client gets the worker's answer, is charged
once, and ``capd module samples NAME --export DIR`` writes the image with that label."""

from __future__ import annotations

import csv
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import b64, captcha_png
from tests.modules.conftest import ModuleServer
from tests.processes import REPO, Processes, capd_cli, post

pytestmark = pytest.mark.slow

TEXT = "4821"
PRICE_UNITS = 30_000  # ImageToTextTask: 0.3 USD per 1,000
WAIT_S = 60


def query(db_path: Path, sql: str, *args: Any) -> list[tuple[Any, ...]]:
    conn = sqlite3.connect(db_path, timeout=10)
    try:
        return conn.execute(sql, args).fetchall()
    finally:
        conn.close()


def wait_for_line(processes: Processes, name: str, text: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while text not in processes.log(name):
        assert time.monotonic() < deadline, processes.log(name)
        time.sleep(0.05)


def test_a_task_below_its_threshold_is_answered_by_a_person_and_kept_as_a_sample(
        processes: Processes, tmp_path: Path,
        module_server: Callable[..., ModuleServer]) -> None:
    served = module_server(CAPD_HUMAN_FALLBACK="true")
    db, lib, url, key, token = served.db, served.lib, served.url, served.key, served.token
    db_path = tmp_path / "capd.db"
    go = tmp_path / "go"
    processes.start_python("person", [str(REPO / "tests" / "human_worker.py"), url, token,
                                      "--text", TEXT, "--go", str(go)])
    wait_for_line(processes, "person", "polling: ok")  # a person serves ImageToText

    image = captcha_png(TEXT)
    created = post(url, "createTask", {"clientKey": key, "task": {
        "type": "ImageToTextTask", "body": b64(image), "capMonsterModule": "tiny",
        "recognizingThreshold": 100}})
    assert created["errorId"] == 0, created
    task_id = created["taskId"]
    # the built-in reading (the module's) fails it; with a person about, it is theirs
    deadline = time.monotonic() + WAIT_S
    while query(db_path, "SELECT state, for_humans FROM tasks WHERE id = ?",
                task_id) != [("queued", 1)]:
        assert time.monotonic() < deadline, processes.log("serve")
        time.sleep(0.05)
    go.touch()  # the person starts taking work
    deadline = time.monotonic() + WAIT_S
    while True:
        answer = post(url, "getTaskResult", {"clientKey": key, "taskId": task_id})
        if answer.get("status") != "processing":
            break
        assert time.monotonic() < deadline, processes.log("serve")
        time.sleep(0.1)
    assert answer["status"] == "ready", answer
    assert answer["solution"] == {"text": TEXT}
    # the person's answer: it prints once its complete call returns, which may be after
    # the poll above saw the task finished
    wait_for_line(processes, "person", f"task {task_id}: answered {TEXT!r}")

    balance = post(url, "getBalance", {"clientKey": key})["balance"]
    assert balance == pytest.approx(5 - PRICE_UNITS / 100_000_000)
    assert query(db_path, "SELECT amount_units FROM ledger WHERE task_id = ?"
                 " AND kind = 'charge'", task_id) == [(-PRICE_UNITS,)]

    out = tmp_path / "samples"
    printed = capd_cli(db, "module", "samples", "tiny", "--export", str(out),
                       CAPD_MODULES_DIR=str(lib))
    assert printed.startswith("1 sample of module tiny written to")
    with (out / "labels.csv").open(newline="") as fh:
        [row] = list(csv.DictReader(fh))
    assert row["text"] == TEXT
    assert (out / row["file"]).read_bytes() == image
