"""Learning from answers, end to end with real processes: ImageToText tasks naming a
stored module, answered by an external worker process over the worker protocol
(tests/human_worker.py), are kept as that module's samples; one reported incorrect is
not; `capd module samples NAME --export DIR` writes the rest in the training format.
Answers of a `capd worker` (the built-in reading, model output) are kept as no samples."""

from __future__ import annotations

import csv
import json
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from capd.cli import main
from capd.modules.library import Library
from tests.helpers import LiveServer, b64, captcha_png
from tests.human_worker import body_digest
from tests.modules.conftest import ModuleServer
from tests.processes import REPO, Processes, capd_cli, post

pytestmark = pytest.mark.slow

TEXTS = ("fbte", "xxhfd", "h2nwm")



def test_worker_answers_become_samples_and_reported_ones_do_not(
        processes: Processes, tmp_path: Path,
        module_server: Callable[..., ModuleServer]) -> None:
    served = module_server(CAPD_BUILTIN_OCR="false")
    db, lib, url, key, token = served.db, served.lib, served.url, served.key, served.token
    # a person who answers each image with its text
    answer_file = tmp_path / "answers.json"
    answer_file.write_text(json.dumps({body_digest(b64(captcha_png(t))): t
                                   for t in (*TEXTS, "plain")}))
    processes.start_python("worker", [str(REPO / "tests" / "human_worker.py"), url, token,
                                      "--answers", str(answer_file)])

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


def test_answers_of_a_capd_worker_are_not_kept_as_samples(
        make_server: Callable[..., LiveServer], tmp_path: Path, module_file: bytes) -> None:
    lib = tmp_path / "lib"
    Library(lib).save(module_file)
    server = make_server(builtin_ocr=False, modules_dir=str(lib))
    key = server.new_account("1")
    reader, person = server.new_worker_token(), server.new_worker_token()
    kinds = ((reader, True, "1111"), (person, False, "2222"))
    task_ids = []
    for token, builtin, text in kinds:
        server.call("worker/v1/lease", {"workerToken": token, "types": ["ImageToTextTask"]})
        created = server.call("createTask", {"clientKey": key, "task": {
            "type": "ImageToTextTask", "body": b64(captcha_png(text)),
            "capMonsterModule": "tiny"}})
        [lease] = server.call("worker/v1/lease", {
            "workerToken": token, "types": ["ImageToTextTask"],
            "builtinReader": builtin})["leases"]
        assert lease["taskId"] == created["taskId"]
        assert server.call("worker/v1/complete", {
            "workerToken": token, "leaseId": lease["leaseId"],
            "solution": {"text": text}}) == {"errorId": 0}
        task_ids.append(lease["taskId"])
    kept = sorted(p.name for p in (lib / "tiny" / "samples").iterdir())
    assert kept == [f"{task_ids[1]}.img", f"{task_ids[1]}.txt"]  # the person's only
