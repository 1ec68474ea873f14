"""examples/manual_worker.py, driven as a real subprocess against a live capd: a person's
answers typed on its stdin reach the client, failures are not charged, the lease is kept
alive while the person types, and a bad token stops it with one clear line."""

from __future__ import annotations

import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

import pytest

from tests.helpers import SITEKEY, LiveServer, b64, captcha_png

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = REPO / "examples" / "manual_worker.py"
IMAGE = "ImageToTextTask"
RECAPTCHA = {"type": "RecaptchaV2TaskProxyless", "websiteURL": "https://example.com/login",
             "websiteKey": SITEKEY}
OPENING = 1_000_000_000  # 10 USD in units of 1e-8
IMAGE_PRICE = 30_000  # 0.3 USD per 1,000
WAIT_S = 20  # bound on every wait for the example; none is expected to take this long


@pytest.fixture
def backend(tmp_path: Path) -> str:
    """SQLite only: the example is a client of the worker protocol, whose behaviour on
    each store backend tests/api/test_workers.py covers."""
    return f"sqlite:///{tmp_path}/capd.db"


class Example:
    """One run of the example with its stdout read line by line in a thread, so that every
    wait has a timeout."""

    def __init__(self, url: str, token: str, types: list[str], *extra: str) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CAPD_")}
        # Ctrl-C as a terminal delivers it: a suite started in the background by a
        # non-interactive shell (`cmd &`) runs with SIGINT ignored, every child inherits
        # that, and the example rightly leaves an ignored SIGINT ignored
        self.proc = subprocess.Popen(
            [sys.executable, str(EXAMPLE), "--url", url, "--token", token,
             "--types", ",".join(types), *extra],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
            text=True, bufsize=1, env=env, cwd=REPO,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.stdout: list[str] = []
        self.stderr: list[str] = []
        self._queues: dict[str, queue.Queue[str | None]] = {
            "stdout": queue.Queue(), "stderr": queue.Queue()}
        self._seen = {"stdout": self.stdout, "stderr": self.stderr}
        assert self.proc.stdout is not None and self.proc.stderr is not None
        self._readers = [
            threading.Thread(target=self._pump, args=(self.proc.stdout, self._queues["stdout"]),
                             daemon=True),
            threading.Thread(target=self._pump, args=(self.proc.stderr, self._queues["stderr"]),
                             daemon=True)]
        for reader in self._readers:
            reader.start()

    @staticmethod
    def _pump(stream: IO[str], lines: queue.Queue[str | None]) -> None:
        for line in stream:
            lines.put(line.rstrip("\n"))
        lines.put(None)

    def transcript(self) -> str:
        self._drain()
        return ("stdout:\n" + "\n".join(self.stdout) + "\nstderr:\n" + "\n".join(self.stderr))

    def _drain(self) -> None:
        for name, lines in self._queues.items():
            while not lines.empty():
                line = lines.get_nowait()
                if line is None:
                    lines.put(None)
                    break
                self._seen[name].append(line)

    def expect(self, text: str, stream: str = "stdout", timeout_s: float = WAIT_S) -> str:
        """The first further line of ``stream`` containing ``text``."""
        lines = self._queues[stream]
        deadline = time.monotonic() + timeout_s
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"no line with {text!r} in {timeout_s} s\n"
                                     f"{self.transcript()}")
            try:
                line = lines.get(timeout=remaining)
            except queue.Empty:
                continue
            if line is None:
                lines.put(None)  # keep the end mark for later calls
                raise AssertionError(f"the example ended before printing {text!r}\n"
                                     f"{self.transcript()}")
            self._seen[stream].append(line)
            if text in line:
                return line

    def type(self, line: str) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()

    def close_stdin(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()

    def finish(self, timeout_s: float = WAIT_S) -> int:
        """Wait for the exit; the rest of its output is then in stdout/stderr."""
        try:
            code = self.proc.wait(timeout=timeout_s)
        except subprocess.TimeoutExpired:
            raise AssertionError(f"the example did not exit\n{self.transcript()}") from None
        for reader in self._readers:
            reader.join(timeout=5)
        self._drain()
        return code

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        for stream in (self.proc.stdin, self.proc.stdout, self.proc.stderr):
            if stream is not None:
                stream.close()


@pytest.fixture
def example() -> Iterator[Callable[..., Example]]:
    runs: list[Example] = []

    def start(server: LiveServer, token: str, types: list[str], *extra: str) -> Example:
        run = Example(server.url, token, types, *extra)
        runs.append(run)
        return run

    yield start
    for run in runs:
        run.kill()


def create_when_served(server: LiveServer, key: str, task: dict[str, Any]) -> int:
    """createTask, retried while the type is not served yet (the example's first lease
    call makes it served)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        answer = server.call("createTask", {"clientKey": key, "task": task})
        if answer.get("errorCode") != "ERROR_NO_SLOT_AVAILABLE":
            assert answer["errorId"] == 0, answer
            return int(answer["taskId"])
        assert time.monotonic() < deadline, "the example never made the type served"
        time.sleep(0.02)


def result(server: LiveServer, key: str, task_id: int) -> dict[str, Any]:
    return server.call("getTaskResult", {"clientKey": key, "taskId": task_id})


def lease_until(server: LiveServer, task_id: int) -> float:
    task = server.admin(lambda store: store.get_task(task_id))
    assert task is not None and task.lease_until is not None, task
    return float(task.lease_until)


def test_image_task_answered_by_hand(make_server: Callable[..., LiveServer],
                                     example: Callable[..., Example]) -> None:
    # no built-in OCR: only the example can take the task; a long image deadline so that
    # the clock can be moved past the first lease's expiry
    server = make_server(builtin_ocr=False, image_deadline_s=600)
    key = server.new_account("10")
    token = server.new_worker_token((IMAGE,))
    run = example(server, token, [IMAGE], "--once", "--ascii", "--extend-every", "0.05")
    run.expect("waiting for a task")
    png = captcha_png("aB3k9")
    task_id = create_when_served(server, key, {"type": IMAGE, "body": b64(png), "numeric": 0})

    image_line = run.expect("image: ")
    path = Path(image_line.split("image: ", 1)[1])
    assert path.read_bytes() == png
    assert any("@" in line or "#" in line for line in run.stdout[:-1]), run.transcript()
    assert result(server, key, task_id)["status"] == "processing"

    # while the person types, the lease is extended: after 45 s of the first lease's 60 s
    # it reaches beyond the original expiry, and 90 s on the task is still theirs
    first = lease_until(server, task_id)
    server.clock.advance(45)
    deadline = time.monotonic() + WAIT_S
    while lease_until(server, task_id) < server.clock() + 55:
        assert time.monotonic() < deadline, "the example never extended its lease"
        time.sleep(0.02)
    server.clock.advance(45)
    assert server.clock() > first

    run.type("aB3k9")
    run.expect('server: {"errorId": 0}')
    assert run.finish() == 0, run.transcript()
    assert not path.exists()  # the temporary image is removed once answered

    answer = result(server, key, task_id)
    assert answer["status"] == "ready" and answer["solution"] == {"text": "aB3k9"}, answer
    assert answer["cost"] == "0.00030"
    assert server.ledger_consistent(key) == (OPENING - IMAGE_PRICE, 0, OPENING - IMAGE_PRICE)


def test_token_task_answered_with_a_token(make_server: Callable[..., LiveServer],
                                          example: Callable[..., Example]) -> None:
    server = make_server()
    key = server.new_account("10")
    token = server.new_worker_token()
    run = example(server, token, ["RecaptchaV2TaskProxyless", "TurnstileTaskProxyless"],
                  "--once")
    run.expect("waiting for a task")
    task_id = create_when_served(server, key, RECAPTCHA)
    run.expect(f"websiteKey: {SITEKEY}")
    run.type("03AGdBq25SxXT-pmSeBXjzScW")
    run.expect('server: {"errorId": 0}')
    assert run.finish() == 0, run.transcript()
    answer = result(server, key, task_id)
    assert answer["status"] == "ready", answer
    assert answer["solution"] == {"gRecaptchaResponse": "03AGdBq25SxXT-pmSeBXjzScW"}
    balance, reserved, ledger = server.ledger_consistent(key)
    assert reserved == 0 and balance == ledger < OPENING


def test_proxy_password_is_never_shown(make_server: Callable[..., LiveServer],
                                       example: Callable[..., Example]) -> None:
    server = make_server(proxy_preflight=False)
    key = server.new_account("10")
    token = server.new_worker_token()
    run = example(server, token, ["RecaptchaV2Task"], "--once")
    run.expect("waiting for a task")
    task_id = create_when_served(server, key, {
        **RECAPTCHA, "type": "RecaptchaV2Task", "proxyType": "http",
        "proxyAddress": "8.8.8.8", "proxyPort": 8080, "proxyLogin": "user7",
        "proxyPassword": "s3cret-Pa55"})
    run.expect("proxyPassword: ********")
    run.type("token-value")
    assert run.finish() == 0, run.transcript()
    assert "s3cret-Pa55" not in run.transcript()
    assert "  proxyLogin: user7" in run.stdout
    assert result(server, key, task_id)["solution"] == {"gRecaptchaResponse": "token-value"}


def test_empty_line_gives_up_uncharged(make_server: Callable[..., LiveServer],
                                       example: Callable[..., Example]) -> None:
    server = make_server(builtin_ocr=False)
    key = server.new_account("10")
    token = server.new_worker_token()
    run = example(server, token, [IMAGE], "--once")
    run.expect("waiting for a task")
    task_id = create_when_served(server, key, {"type": IMAGE, "body": b64(captcha_png("48213"))})
    run.expect("image: ")
    run.type("")
    run.expect('server: {"errorId": 0}')
    assert run.finish() == 0, run.transcript()
    answer = result(server, key, task_id)
    assert answer["errorId"] == 1 and answer["errorCode"] == "ERROR_CAPTCHA_UNSOLVABLE", answer
    assert server.ledger_consistent(key) == (OPENING, 0, OPENING)


def test_bang_code_fails_with_that_code(make_server: Callable[..., LiveServer],
                                        example: Callable[..., Example]) -> None:
    server = make_server()
    key = server.new_account("10")
    token = server.new_worker_token()
    run = example(server, token, ["RecaptchaV2TaskProxyless"], "--once")
    run.expect("waiting for a task")
    task_id = create_when_served(server, key, RECAPTCHA)
    run.expect("websiteURL: ")
    run.type("!NOT_A_CODE")  # refused by the server: asked again, the lease still held
    run.expect("try again")
    run.type("!RECAPTCHA_INVALID_SITEKEY")
    run.expect('server: {"errorId": 0}')
    assert run.finish() == 0, run.transcript()
    answer = result(server, key, task_id)
    assert answer["errorCode"] == "ERROR_RECAPTCHA_INVALID_SITEKEY", answer
    assert server.ledger_consistent(key) == (OPENING, 0, OPENING)


def test_end_of_input_hands_the_task_back(make_server: Callable[..., LiveServer],
                                          example: Callable[..., Example]) -> None:
    server = make_server()
    key = server.new_account("10")
    token = server.new_worker_token()
    run = example(server, token, ["TurnstileTaskProxyless"])
    run.expect("waiting for a task")
    task_id = create_when_served(server, key, {"type": "TurnstileTaskProxyless",
                                               "websiteURL": "https://example.com/",
                                               "websiteKey": "0x4AAA"})
    run.expect("websiteKey: 0x4AAA")
    run.close_stdin()
    assert run.finish() == 0, run.transcript()
    assert run.stderr == [f"manual_worker: task {task_id} handed back to the queue"]
    # the lease was cut to a second: the task is someone else's to take right after
    assert lease_until(server, task_id) <= server.clock() + 1
    server.clock.advance(1.5)
    again = server.call("worker/v1/lease", {"workerToken": token,
                                            "types": ["TurnstileTaskProxyless"]})
    assert [item["taskId"] for item in again["leases"]] == [task_id]


def test_ctrl_c_while_waiting_hands_back_what_the_pending_call_brings(
        make_server: Callable[..., LiveServer], example: Callable[..., Example]) -> None:
    server = make_server()
    key = server.new_account("10")
    token = server.new_worker_token()
    run = example(server, token, ["TurnstileTaskProxyless"], "--wait", "10")
    run.expect("waiting for a task")
    create_when_served(server, key, {"type": "TurnstileTaskProxyless",  # served now
                                     "websiteURL": "https://example.com/",
                                     "websiteKey": "0x4AAA"})
    run.expect("websiteKey: 0x4AAA")
    run.type("tok-1")
    run.expect('server: {"errorId": 0}')
    run.expect("waiting for a task")
    run.proc.send_signal(signal.SIGINT)  # while its next lease call waits for work
    run.expect("stopping once the pending lease call ends", stream="stderr")
    task_id = create_when_served(server, key, {"type": "TurnstileTaskProxyless",
                                               "websiteURL": "https://example.com/",
                                               "websiteKey": "0x4BBB"})
    assert run.finish() == 130, run.transcript()
    assert f"manual_worker: task {task_id} handed back to the queue" in run.stderr
    assert "websiteKey: 0x4BBB" not in run.stdout  # never shown: it was stopping
    server.clock.advance(1.5)
    again = server.call("worker/v1/lease", {"workerToken": token,
                                            "types": ["TurnstileTaskProxyless"]})
    assert [item["taskId"] for item in again["leases"]] == [task_id]


@pytest.mark.parametrize("case", ["unknown", "revoked", "wrong-type"])
def test_bad_token_stops_with_one_line(make_server: Callable[..., LiveServer],
                                       example: Callable[..., Example], case: str) -> None:
    from capd.workers import token_digest

    server = make_server()
    if case == "unknown":
        token = "0" * 48
    elif case == "revoked":
        token = server.new_worker_token()
        server.admin(lambda store: store.revoke_worker_token(token_digest(token), time.time()))
    else:
        token = server.new_worker_token((IMAGE,))
    run = example(server, token, ["RecaptchaV2TaskProxyless"])
    assert run.finish() == 1, run.transcript()
    assert len(run.stderr) == 1, run.transcript()
    assert run.stderr[0].startswith("manual_worker: error: ERROR_WORKER_TOKEN_INVALID")


def test_unreachable_server_stops_with_one_line() -> None:
    from tests.helpers import free_port

    run = Example(f"http://127.0.0.1:{free_port()}", "0" * 48, [IMAGE])
    try:
        assert run.finish() == 1, run.transcript()
        assert len(run.stderr) == 1 and run.stderr[0].startswith(
            "manual_worker: error: cannot reach http://127.0.0.1:"), run.transcript()
    finally:
        run.kill()
