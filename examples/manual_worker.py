#!/usr/bin/env python3
"""A manual capd worker: a person solves captcha tasks by hand in a terminal.

Usage::

    python examples/manual_worker.py --url http://127.0.0.1:8080 --token TOKEN \\
        --types ImageToTextTask,RecaptchaV2TaskProxyless [--once]

TOKEN is a worker token from ``capd worker-token create [--types A,B]`` (the last line it
prints). The program speaks capd's worker protocol (docs/workers.md): it long-polls
``/worker/v1/lease`` for one task at a time, shows it, reads your answer from stdin, and
sends it with ``/worker/v1/complete``, printing the server's answer.

- ImageToTextTask: the image is written to a temporary file whose path is printed
  (``image: /tmp/...png``); with Pillow installed and a terminal on stdout (or ``--ascii``)
  a coarse ASCII rendering is printed too. Type the text you read.
- other types: the task's fields are printed (the proxy password masked, long values cut).
  Type the value of the type's solution key (``gRecaptchaResponse`` for reCAPTCHA and
  hCaptcha, ``token`` for Turnstile, FunCaptcha and the like, ...), or a JSON object for the
  whole solution (needed for GeeTest: ``{"challenge": ..., "validate": ..., ...}``).
- an empty line gives up: the task fails with ERROR_CAPTCHA_UNSOLVABLE (not charged).
- ``!CODE`` fails the task with that worker failure code, e.g. ``!ERROR_PROXY_BANNED`` or
  ``!RECAPTCHA_INVALID_SITEKEY`` (the ``ERROR_`` prefix may be left out).

While you type, the lease is kept alive with ``/worker/v1/extend`` every ``--extend-every``
seconds (default 20). Lines typed while no task is shown are ignored. End of input (Ctrl-D)
stops with exit status 0: a task you hold is handed back (its lease is released,
so it returns to the queue for someone else), and while waiting for work the pending lease
call is let finish first (at most ``--wait`` seconds) so that no task is leased to a
program that has gone. Ctrl-C stops the same way with exit status 130; while waiting, a
second Ctrl-C stops at once (a task the abandoned lease call still takes then goes back to
the queue only when its lease runs out). A protocol error, e.g. ERROR_WORKER_TOKEN_INVALID, is
printed as one line on stderr and the exit status is 1. With ``--once`` the program stops
after one task: status 0 if the server accepted the completion, else 1.

Needs Python 3.11+ and httpx; Pillow is optional (ASCII rendering only).
"""

from __future__ import annotations

import argparse
import base64
import binascii
import io
import json
import os
import queue
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

PROG = "manual_worker"
IMAGE_TYPE = "ImageToTextTask"
LEASE_WAIT_S = 20
LEASE_ASK_S = 60  # each extension asks for this much more time
RETRY_S = (0.5, 1, 2, 5, 10)  # backoff while the server cannot be reached, then give up
SECRET_FIELDS = frozenset({"proxyPassword"})
LONG_VALUE_CHARS = 160
ASCII_RAMP = "@%#*+=-:. "  # dark to light
_DATA_URI_RE = re.compile(r"^\s*data:[^,]*?;base64,", re.IGNORECASE)

# answers that stay on the same task (the person may type again) rather than end it
RETRY_CODES = frozenset({"ERROR_BAD_SOLUTION", "ERROR_BAD_PARAMETERS"})


class ProtocolError(Exception):
    """The server refused us, or answered something that is not the worker protocol."""


class Quit(Exception):
    """End of input: stop cleanly."""


def out(*parts: Any) -> None:
    print(*parts, flush=True)


def warn(message: str) -> None:
    print(f"{PROG}: {message}", file=sys.stderr, flush=True)


# -- the protocol ----------------------------------------------------------------------------
class Desk:
    """The worker protocol's three calls on one HTTP client."""

    def __init__(self, url: str, token: str, wait_s: float) -> None:
        self.url = url.rstrip("/")
        self.token = token
        self.client = httpx.Client(base_url=self.url,
                                   timeout=httpx.Timeout(wait_s + 15, connect=5))
        self.reached = False  # fail fast until the server has answered once

    def close(self) -> None:
        self.client.close()

    def call(self, method: str, body: dict[str, Any]) -> dict[str, Any]:
        """POST one protocol call; transport failures and 5xx answers are retried with
        backoff (except before the server has answered once), anything else that is not
        a JSON object is a ProtocolError. The answer may carry errorId 1."""
        attempt = 0
        while True:
            try:
                response = self.client.post(f"/worker/v1/{method}",
                                            json={"workerToken": self.token, **body})
                if response.status_code < 500:
                    break
                problem = f"HTTP {response.status_code}"
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if not self.reached or attempt >= len(RETRY_S):
                raise ProtocolError(f"cannot reach {self.url} ({problem})")
            warn(f"{method} failed ({problem}); retrying in {RETRY_S[attempt]} s")
            time.sleep(RETRY_S[attempt])
            attempt += 1
        try:
            answer = response.json()
        except ValueError:
            answer = None
        if response.status_code != 200 or not isinstance(answer, dict) or (
                "errorId" not in answer):
            raise ProtocolError(f"{method}: HTTP {response.status_code} from {self.url} is not"
                                " a capd worker protocol answer (wrong --url?)")
        self.reached = True
        if answer.get("errorCode") == "ERROR_WORKER_TOKEN_INVALID":
            raise ProtocolError(_describe(answer))
        return answer

    def lease(self, types: list[str], wait_s: float) -> dict[str, Any] | None:
        answer = self.call("lease", {"types": types, "max": 1, "waitSeconds": wait_s})
        if answer.get("errorId"):
            raise ProtocolError(_describe(answer))
        leases = answer.get("leases")
        if not isinstance(leases, list):
            raise ProtocolError(f"lease: no 'leases' list in {json.dumps(answer)[:200]}")
        return leases[0] if leases else None

    def complete(self, lease_id: str, solution: dict[str, Any] | None,
                 error_code: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {"leaseId": lease_id}
        if solution is not None:
            body["solution"] = solution
        else:
            body["errorCode"] = error_code
        return self.call("complete", body)


def _describe(answer: dict[str, Any]) -> str:
    code = answer.get("errorCode") or "error"
    text = answer.get("errorDescription")
    return f"{code}: {text}" if text else str(code)


class LeaseKeeper(threading.Thread):
    """Extends one lease in the background while the person types (its own HTTP client:
    the main thread may be using the other one)."""

    def __init__(self, url: str, token: str, lease: dict[str, Any], every_s: float) -> None:
        super().__init__(name="lease-keeper", daemon=True)
        self.url, self.token, self.lease_id = url, token, str(lease["leaseId"])
        self.every_s = every_s
        self.expires_at = float(lease.get("leaseExpiresAt") or 0)
        self.stopped = threading.Event()
        self.lost: str | None = None  # why the lease could not be extended

    def _interval(self) -> float:
        # extend at most every_s apart, and well before a short lease would run out
        remaining = self.expires_at - time.time()
        return max(0.05, min(self.every_s, remaining / 2 if remaining > 0 else self.every_s))

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self.stopped.wait(self._interval()):
                try:
                    answer = client.post("/worker/v1/extend", json={
                        "workerToken": self.token, "leaseId": self.lease_id,
                        "seconds": LEASE_ASK_S}).json()
                except (httpx.HTTPError, ValueError) as exc:
                    warn(f"extending the lease failed ({type(exc).__name__}); trying again")
                    continue
                if not isinstance(answer, dict) or answer.get("errorId") != 0:
                    self.lost = _describe(answer) if isinstance(answer, dict) else "?"
                    print(file=sys.stderr)
                    warn(f"the lease is lost ({self.lost}): the task may go to someone"
                         " else, and your answer will be refused")
                    return
                self.expires_at = float(answer.get("leaseExpiresAt") or 0)

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=15)


# -- showing a task --------------------------------------------------------------------------
def decode_base64(raw: Any) -> bytes | None:
    """An image from base64 text as clients send it (a data: URI, line breaks and the
    URL-safe alphabet allowed); None when it is not base64."""
    if not isinstance(raw, str) or not raw:
        return None
    text = "".join(_DATA_URI_RE.sub("", raw, count=1).split())
    text += "=" * (-len(text) % 4)
    for candidate in (text, text.replace("-", "+").replace("_", "/")):
        try:
            return base64.b64decode(candidate, validate=True)
        except (binascii.Error, ValueError):
            continue
    return None


def image_suffix(data: bytes) -> str:
    if data.startswith(b"\x89PNG"):
        return ".png"
    if data.startswith(b"\xff\xd8\xff"):
        return ".jpg"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return ".gif"
    if data.startswith(b"BM"):
        return ".bmp"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return ".webp"
    return ".bin"


def ascii_art(data: bytes, columns: int) -> str | None:
    """A coarse rendering of an image in characters; None without Pillow or for an image
    Pillow cannot read."""
    try:
        from PIL import Image
    except ImportError:
        return None
    try:
        with Image.open(io.BytesIO(data)) as opened:
            im = opened.convert("RGBA")
        white = Image.new("RGBA", im.size, "white")
        gray = Image.alpha_composite(white, im).convert("L")
        width, height = gray.size
        cols = max(8, min(columns, width))
        rows = max(1, round(height / width * cols * 0.5))  # characters are twice as tall
        small = gray.resize((cols, rows))
        pixels = small.tobytes()
    except Exception:  # any unreadable image: the file path is still shown
        return None
    low, high = min(pixels), max(pixels)
    span = max(1, high - low)
    last = len(ASCII_RAMP) - 1
    lines = []
    for r in range(rows):
        row = pixels[r * cols:(r + 1) * cols]
        lines.append("".join(ASCII_RAMP[(p - low) * last // span] for p in row).rstrip())
    while lines and not lines[-1]:
        lines.pop()
    while lines and not lines[0]:
        lines.pop(0)
    return "\n".join(lines)


def shown_value(name: str, value: Any) -> str:
    if name in SECRET_FIELDS and value not in (None, ""):
        return "********"
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    if len(text) > LONG_VALUE_CHARS:
        return f"{text[:LONG_VALUE_CHARS]}... ({len(text)} chars)"
    return text


def image_hints(task: dict[str, Any]) -> list[str]:
    hints = []
    numeric = task.get("numeric")
    if numeric == 1:
        hints.append("digits only")
    elif numeric == 2:
        hints.append("no digits")
    if task.get("case") is False or task.get("case") == 0:
        hints.append("case does not matter")
    if task.get("math") in (True, 1):
        hints.append("an arithmetic expression: type its result")
    module = task.get("capMonsterModule")
    if isinstance(module, str) and module not in ("", "universal"):
        hints.append(f"module {module}")
    return hints


def solution_key(task_type: str) -> str | None:
    """The solution key a typed line fills; None where only a JSON object will do."""
    if task_type == IMAGE_TYPE:
        return "text"
    if task_type.startswith(("Recaptcha", "NoCaptcha", "HCaptcha")):
        return "gRecaptchaResponse"
    if task_type.startswith("GeeTest"):
        return None  # challenge/validate/seccode (v3) or captcha_id/lot_number/... (v4)
    return {"AmazonTask": "cookies", "ComplexImageTask": "answer",
            "CustomTask": "data"}.get(task_type, "token")


class TaskView:
    """Prints one leased task; owns the temporary files written for it."""

    def __init__(self, lease: dict[str, Any], workdir: Path, ascii_mode: bool | None) -> None:
        self.lease = lease
        self.workdir = workdir
        self.ascii_mode = ascii_mode
        self.files: list[Path] = []

    def _write(self, data: bytes, name: str) -> Path:
        path = self.workdir / f"{name}{image_suffix(data)}"
        path.write_bytes(data)
        self.files.append(path)
        return path

    def _ascii_wanted(self) -> bool:
        if self.ascii_mode is not None:
            return self.ascii_mode
        return sys.stdout.isatty()

    def show(self) -> None:
        lease = self.lease
        raw = lease.get("task")
        task: dict[str, Any] = raw if isinstance(raw, dict) else {}
        task_type = str(lease.get("type"))
        deadline = lease.get("deadlineAt")
        left = f", deadline in {deadline - time.time():.0f} s" if isinstance(
            deadline, int | float) else ""
        out(f"\n=== task {lease.get('taskId')} ({task_type}){left}")
        if task_type == IMAGE_TYPE:
            self._show_image(task)
        else:
            self._show_fields(task)

    def _show_image(self, task: dict[str, Any]) -> None:
        data = decode_base64(task.get("body", task.get("Body")))
        if data is None:
            out("the image could not be decoded: an empty line gives up")
            return
        path = self._write(data, f"task-{self.lease.get('taskId')}")
        if self._ascii_wanted():
            columns = min(shutil.get_terminal_size((100, 24)).columns - 1, 120)
            art = ascii_art(data, columns)
            if art:
                out(art)
        out(f"image: {path}")
        hints = image_hints(task)
        if hints:
            out(f"hints: {'; '.join(hints)}")

    def _show_fields(self, task: dict[str, Any]) -> None:
        for name, value in task.items():
            if name == "type":
                continue
            if name == "imagesBase64" and isinstance(value, list):
                for n, item in enumerate(value):
                    data = decode_base64(item)
                    where = (self._write(data, f"task-{self.lease.get('taskId')}-{n}")
                             if data else "(not base64)")
                    out(f"  image {n}: {where}")
                continue
            out(f"  {name}: {shown_value(name, value)}")

    def cleanup(self) -> None:
        for path in self.files:
            path.unlink(missing_ok=True)


# -- reading an answer -----------------------------------------------------------------------
def parse_list(line: str) -> list[Any]:
    if line.startswith("["):
        value = json.loads(line)
        if not isinstance(value, list):
            raise ValueError("not a JSON list")
        return value
    items: list[Any] = []
    for part in (p.strip() for p in line.split(",")):
        if part.lower() in ("true", "false"):
            items.append(part.lower() == "true")
        elif re.fullmatch(r"-?\d+", part):
            items.append(int(part))
        else:
            items.append(part)
    return items


def parse_answer(task_type: str, line: str) -> tuple[dict[str, Any] | None, str | None]:
    """(solution, None) or (None, failure code) for a typed line; ValueError when the line
    cannot be turned into either (the person is asked again)."""
    if task_type == IMAGE_TYPE:
        text = line.strip()
        if not text:
            return None, "ERROR_CAPTCHA_UNSOLVABLE"
        if text.startswith("!") and len(text) > 1:
            return None, failure_code(text)
        return {"text": text}, None
    text = line.strip()
    if not text:
        return None, "ERROR_CAPTCHA_UNSOLVABLE"
    if text.startswith("!"):
        return None, failure_code(text)
    if text.startswith("{"):
        value = json.loads(text)
        if not isinstance(value, dict):
            raise ValueError("not a JSON object")
        return value, None
    key = solution_key(task_type)
    if key is None:
        raise ValueError(f"{task_type} needs a JSON object with the whole solution")
    if key == "answer":
        return {key: parse_list(text)}, None
    return {key: text}, None


def failure_code(text: str) -> str:
    code = text[1:].strip().upper()
    return code if code.startswith("ERROR_") else f"ERROR_{code}"


def prompt_for(task_type: str) -> str:
    key = solution_key(task_type)
    if task_type == IMAGE_TYPE:
        what = "text"
    elif key is None:
        what = "solution as a JSON object"
    elif key == "answer":
        what = "answer (comma-separated or a JSON list)"
    else:
        what = key
    return f"{what} (empty: give up, !CODE: fail)> "


class Stdin:
    """Lines of stdin read by a thread, so that the end of input is noticed even while a
    lease call is waiting for work."""

    def __init__(self) -> None:
        self._lines: queue.Queue[str | None] = queue.Queue()
        self.ended = threading.Event()
        threading.Thread(target=self._read, name="stdin", daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                line = sys.stdin.readline()
            except (OSError, ValueError):
                line = ""
            if not line:
                break
            self._lines.put(line.rstrip("\r\n"))
        self.ended.set()
        self._lines.put(None)

    def drop_typed_ahead(self) -> None:
        """Forget lines typed while no task was shown (they answer nothing)."""
        dropped = 0
        while True:
            try:
                line = self._lines.get_nowait()
            except queue.Empty:
                break
            if line is None:
                self._lines.put(None)
                break
            dropped += 1
        if dropped:
            out(f"({dropped} line(s) typed before this task ignored)")

    def line(self, prompt: str) -> str:
        """The next line (Quit at the end of input)."""
        print(prompt, end="", flush=True)
        while True:
            try:
                line = self._lines.get(timeout=0.5)  # a timeout keeps Ctrl-C responsive
            except queue.Empty:
                continue
            if line is None:
                self._lines.put(None)
                out("")
                raise Quit
            return line


# -- the loop ----------------------------------------------------------------------------------
def solve(desk: Desk, lease: dict[str, Any], args: argparse.Namespace, workdir: Path,
          stdin: Stdin) -> bool:
    """Show one task, read the answer and complete it; True if the server accepted it."""
    view = TaskView(lease, workdir, args.ascii)
    keeper = LeaseKeeper(desk.url, desk.token, lease, args.extend_every)
    keeper.start()
    handed_over = False
    try:
        stdin.drop_typed_ahead()
        view.show()
        task_type = str(lease.get("type"))
        while True:
            line = stdin.line(prompt_for(task_type))
            try:
                solution, code = parse_answer(task_type, line)
            except ValueError as exc:
                out(f"cannot use that ({exc}); try again")
                continue
            keeper.stop()
            handed_over = True
            answer = desk.complete(str(lease["leaseId"]), solution, code)
            out(f"server: {json.dumps(answer)}")
            if answer.get("errorId") == 0:
                out(f"task {lease.get('taskId')}: "
                    + ("solved" if solution is not None else f"failed with {code}"))
                return True
            if answer.get("errorCode") in RETRY_CODES:
                out("the server did not take that answer; try again")
                keeper = LeaseKeeper(desk.url, desk.token, lease, args.extend_every)
                keeper.start()
                handed_over = False
                continue
            if answer.get("errorCode") == "ERROR_LEASE_NOT_FOUND":
                out("the lease had run out or the task was already completed elsewhere")
            return False
    finally:
        keeper.stop()
        view.cleanup()
        if not handed_over and keeper.lost is None:
            hand_back(desk, lease)


def hand_back(desk: Desk, lease: dict[str, Any]) -> None:
    """Stopping with a task in hand: release its lease so that it goes back to the queue
    at once, not when the lease would have run out."""
    try:
        answer = desk.client.post("/worker/v1/extend", json={
            "workerToken": desk.token, "leaseId": lease["leaseId"], "release": True},
            timeout=5).json()
    except (httpx.HTTPError, ValueError):
        answer = None
    if isinstance(answer, dict) and answer.get("errorId") == 0:
        warn(f"task {lease.get('taskId')} handed back to the queue")


class CtrlC:
    """The SIGINT handler. While a lease call is pending (``deferring``), the first Ctrl-C
    is only counted, and the waiting loop polls the count: a KeyboardInterrupt raised
    there could surface at any bytecode, e.g. outside the loop's ``try`` (it then skipped
    the hand-back) or inside ``threading.Event.wait`` between a lock's acquire and the
    ``with`` that releases it (the lease thread's ``done.set()`` then blocked forever and
    the program hung). Elsewhere, and for a second Ctrl-C, it raises KeyboardInterrupt
    as usual: stopping at once is what is wanted then."""

    def __init__(self) -> None:
        self.deferring = False
        self.count = 0

    def __call__(self, signum: int, frame: Any) -> None:
        self.count += 1
        if not self.deferring or self.count > 1:
            raise KeyboardInterrupt

    def install(self) -> None:
        # a SIGINT ignored by whoever started us (e.g. `cmd &` in a script) stays ignored
        if signal.getsignal(signal.SIGINT) is signal.default_int_handler:
            signal.signal(signal.SIGINT, self)


CTRL_C = CtrlC()


def next_lease(desk: Desk, types: list[str], wait_s: float, stdin: Stdin,
               announce: bool) -> dict[str, Any] | None:
    """One long-polling lease call, made in a thread so that the end of input and Ctrl-C
    are seen while it waits. Either lets the call finish (a task it brings is handed back)
    and then stops (Quit, KeyboardInterrupt): no task is left leased to a program that has
    gone. A second Ctrl-C stops at once."""
    if stdin.ended.is_set():
        raise Quit
    answer: list[dict[str, Any] | None] = []
    failure: list[BaseException] = []

    done = threading.Event()  # not Thread.join: an interrupted join may lose track

    def call() -> None:
        try:
            answer.append(desk.lease(types, wait_s))
        except Exception as exc:  # handed to the main thread
            failure.append(exc)
        finally:
            done.set()

    CTRL_C.count = 0
    CTRL_C.deferring = True  # the first Ctrl-C from here on is only counted (see CtrlC)
    try:
        threading.Thread(target=call, name="lease", daemon=True).start()
        if announce:
            out(f"waiting for a task of {', '.join(types)} from {desk.url}"
                " (Ctrl-C or Ctrl-D stops)")
        told = False
        while not done.wait(timeout=0.2):
            if (stdin.ended.is_set() or CTRL_C.count) and not told:
                print(file=sys.stderr)
                warn(f"stopping once the pending lease call ends (at most {wait_s:.0f} s;"
                     f" Ctrl-C {'again ' if CTRL_C.count else ''}stops now)")
                told = True
                CTRL_C.deferring = False  # from now on Ctrl-C stops at once, as told
    finally:
        CTRL_C.deferring = False
    interrupted = CTRL_C.count > 0
    if failure:
        raise failure[0]
    lease = answer[0] if answer else None
    if stdin.ended.is_set() or interrupted:
        if lease is not None:
            hand_back(desk, lease)
        if interrupted:
            raise KeyboardInterrupt
        raise Quit
    return lease


def run(args: argparse.Namespace) -> int:
    types = [t.strip() for t in args.types.split(",") if t.strip()]
    desk = Desk(args.url, args.token, args.wait)
    stdin = Stdin()
    workdir = Path(tempfile.mkdtemp(prefix="capd-manual-"))
    try:
        waiting = True
        while True:
            lease = next_lease(desk, types, args.wait, stdin, announce=waiting)
            waiting = False
            if lease is None:
                continue
            accepted = solve(desk, lease, args, workdir, stdin)
            if args.once:
                return 0 if accepted else 1
            waiting = True
    except Quit:
        return 0
    except ProtocolError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr, flush=True)
        return 1
    except KeyboardInterrupt:
        print(f"\n{PROG}: stopped", file=sys.stderr, flush=True)
        return 130
    finally:
        desk.close()
        shutil.rmtree(workdir, ignore_errors=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="manual_worker.py",
                                description="Solve capd tasks by hand (see the docstring).")
    p.add_argument("--url", default=os.environ.get("CAPD_URL", "http://127.0.0.1:8080"),
                   help="the capd server (default $CAPD_URL or http://127.0.0.1:8080)")
    p.add_argument("--token", default=os.environ.get("CAPD_WORKER_TOKEN"),
                   help="a worker token (default $CAPD_WORKER_TOKEN)")
    p.add_argument("--types", default=IMAGE_TYPE,
                   help=f"comma-separated task types to take (default {IMAGE_TYPE})")
    p.add_argument("--once", action="store_true", help="solve one task, then exit")
    p.add_argument("--wait", type=float, default=LEASE_WAIT_S,
                   help=f"long-poll seconds per lease call, 0-30 (default {LEASE_WAIT_S})")
    p.add_argument("--extend-every", type=float, default=20.0, metavar="SECONDS",
                   help="extend a held lease this often (default 20)")
    shown = p.add_mutually_exclusive_group()
    shown.add_argument("--ascii", action="store_true", default=None,
                       help="always print an ASCII rendering of images (needs Pillow)")
    shown.add_argument("--no-ascii", dest="ascii", action="store_false",
                       help="never print one (default: only on a terminal)")
    args = p.parse_args(argv)
    if not args.token:
        p.error("--token is required (or set CAPD_WORKER_TOKEN)")
    if not args.url.startswith(("http://", "https://")):
        p.error(f"not an http(s) URL: {args.url!r}")
    if not any(t.strip() for t in args.types.split(",")):
        p.error("--types names no task type")
    if not 0 <= args.wait <= 30 or args.extend_every <= 0:
        p.error("--wait must be 0-30 and --extend-every positive")
    return args


def main(argv: list[str] | None = None) -> int:
    CTRL_C.install()
    try:
        return run(parse_args(argv))
    except KeyboardInterrupt:  # Ctrl-C outside the loop (e.g. while starting)
        print(f"\n{PROG}: stopped", file=sys.stderr, flush=True)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
