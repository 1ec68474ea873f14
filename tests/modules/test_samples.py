"""Learning from answers, end to end with real processes: ImageToText tasks naming a
stored module, answered by a `capd worker` process over the worker protocol, are kept
as that module's samples; one reported incorrect is not; `capd module samples NAME
--export DIR` writes the rest in the training format."""

from __future__ import annotations

import csv
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from capd.cli import main
from tests.helpers import b64, captcha_png, free_port
from tests.processes import Processes, capd_cli, post

pytestmark = pytest.mark.slow

TEXTS = ("fbte", "xxhfd", "h2nwm")  # read exactly by the general engine (ddddocr)
SETTINGS = {"CAPD_OCR_ENGINE": "ddddocr", "CAPD_OCR_THREADS": "1", "CAPD_MAX_POLLS_PER_S": "50",
            "CAPD_IMAGE_DEADLINE_S": "60"}


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    procs.stop_all()


def test_worker_answers_become_samples_and_reported_ones_do_not(
        processes: Processes, tmp_path: Path, module_file: bytes) -> None:
    db = f"sqlite:///{tmp_path}/capd.db"
    lib = tmp_path / "lib"
    (tmp_path / "tiny.capdmodule").write_bytes(module_file)
    capd_cli(db, "module", "import", str(tmp_path / "tiny.capdmodule"),
             CAPD_MODULES_DIR=str(lib))
    key = capd_cli(db, "account", "create", "--balance", "5").strip().splitlines()[-1]
    token = capd_cli(db, "worker-token", "create", "--types",
                     "ImageToTextTask").strip().splitlines()[-1]
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    server = processes.start("serve", ["--db", db, "serve", "--port", str(port)],
                             CAPD_BUILTIN_OCR="false", CAPD_MODULES_DIR=str(lib), **SETTINGS)
    processes.wait_healthy(url, server)
    # the worker reads with the general engine (its own, empty modules directory)
    processes.start("worker", ["worker", "--url", url, "--token", token, "--threads", "1"],
                    CAPD_MODULES_DIR=str(tmp_path / "worker-lib"), **SETTINGS)

    task_ids: dict[int, str] = {}
    deadline = time.monotonic() + 60
    for text in (*TEXTS, "plain"):
        task = {"type": "ImageToTextTask", "body": b64(captcha_png(text))}
        if text != "plain":
            task["capMonsterModule"] = "tiny"
        while True:
            created = post(url, "createTask", {"clientKey": key, "task": task})
            if created.get("errorCode") != "ERROR_NO_SLOT_AVAILABLE":
                break
            assert time.monotonic() < deadline, "no worker came"
            time.sleep(0.1)
        assert created["errorId"] == 0, created
        task_ids[created["taskId"]] = text
    answers = {}
    for task_id in task_ids:
        while True:
            answer = post(url, "getTaskResult", {"clientKey": key, "taskId": task_id})
            if answer.get("status") != "processing":
                break
            assert time.monotonic() < deadline, processes.log("worker")
            time.sleep(0.05)
        assert answer["errorId"] == 0, answer
        answers[task_id] = answer["solution"]["text"]
    assert [answers[t] for t in task_ids] == [*TEXTS, "plain"]
    reported = next(t for t, text in task_ids.items() if text == "xxhfd")
    assert post(url, "reportIncorrectImageCaptcha", {"clientKey": key,
                                                     "taskId": reported})["errorId"] == 0

    out = tmp_path / "samples"
    printed = capd_cli(db, "module", "samples", "tiny", "--export", str(out),
                       CAPD_MODULES_DIR=str(lib))
    assert printed.startswith("2 samples of module tiny written to")
    with (out / "labels.csv").open(newline="") as fh:
        rows = list(csv.DictReader(fh))
    by_text = {r["text"]: r["file"] for r in rows}
    assert set(by_text) == {"fbte", "h2nwm"}
    for text, name in by_text.items():
        assert (out / name).read_bytes() == captcha_png(text)


def test_samples_of_an_unknown_module_is_one_line(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CAPD_MODULES_DIR", str(tmp_path / "lib"))
    assert main(["module", "samples", "nothing", "--export", str(tmp_path / "out")]) == 1
    assert capsys.readouterr().err.strip().splitlines() == [
        f"capd: error: no module named 'nothing' in {tmp_path / 'lib'}"]
