"""Real capd processes for the tests: start, wait until healthy, kill, always clean up."""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import IO, Any

import httpx

REPO = Path(__file__).resolve().parents[1]


def capd_env(**settings: str) -> dict[str, str]:
    """The environment for a capd process: no stray CAPD_* of ours, this checkout first."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPD_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update(settings)
    return env


def capd_cli(db: str, *args: str, **settings: str) -> str:
    """Run a capd command to completion; returns stdout (raises with stderr on failure)."""
    done = subprocess.run([sys.executable, "-m", "capd", "--db", db, *args], env=capd_env(
        **settings), capture_output=True, text=True, timeout=120)
    if done.returncode != 0:
        raise RuntimeError(f"capd {' '.join(args)} failed: {done.stderr}")
    return done.stdout


class Processes:
    """Long-running capd processes of one test, logged to files, killed at the end."""

    def __init__(self, log_dir: Path) -> None:
        self.log_dir = log_dir
        self.procs: list[subprocess.Popen[bytes]] = []
        self._logs: list[IO[bytes]] = []

    def start(self, name: str, args: list[str], **settings: str) -> subprocess.Popen[bytes]:
        return self.start_python(name, ["-m", "capd", *args], **settings)

    def start_python(self, name: str, args: list[str], **settings: str
                     ) -> subprocess.Popen[bytes]:
        """Any Python program of this checkout (a script and its arguments, or ``-m``)."""
        log = (self.log_dir / f"{name}.log").open("wb")
        self._logs.append(log)
        proc = subprocess.Popen([sys.executable, *args], env=capd_env(**settings),
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        self.procs.append(proc)
        return proc

    def log(self, name: str) -> str:
        return (self.log_dir / f"{name}.log").read_text(errors="replace")[-4000:]

    def wait_healthy(self, url: str, proc: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
        deadline = time.monotonic() + timeout_s
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"capd exited with {proc.returncode} before it was ready")
            try:
                if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} not healthy after {timeout_s} s")
            time.sleep(0.05)

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.kill()
        for proc in self.procs:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=10)
        for log in self._logs:
            log.close()


def post(url: str, method: str, body: dict[str, Any], timeout: float = 10) -> dict[str, Any]:
    answer: dict[str, Any] = httpx.post(f"{url}/{method}", json=body, timeout=timeout).json()
    return answer
