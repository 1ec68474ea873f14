"""``capd backup FILE`` (capd/store/backup.py): a consistent copy of the SQLite database
taken while ``capd serve`` is writing to it, owner-only, that a fresh capd serves with
every account's balance equal to the sum of its ledger."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from capd.domain.money import UNITS_PER_USD
from capd.store.secrets import secret_digest
from tests.helpers import free_port

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[1]
TYPE = "TurnstileTaskProxyless"  # worker-served: no OCR needed to solve tasks
TASK = {"type": TYPE, "websiteURL": "https://example.com/", "websiteKey": "0x4AAAAAAA"}
START_S = 30  # bound on a process becoming ready
TIMEOUT_S = 60  # bound on one CLI command


def capd_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPD_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update(CAPD_BUILTIN_OCR="false", CAPD_MAX_POLLS_PER_S="50")
    return env


def cli(tmp: Path, db: Path | str, *args: str) -> subprocess.CompletedProcess[str]:
    url = db if isinstance(db, str) else f"sqlite:///{db}"
    return subprocess.run([sys.executable, "-m", "capd", "--db", url, *args], cwd=tmp,
                          env=capd_env(), capture_output=True, text=True, timeout=TIMEOUT_S)


class Served:
    def __init__(self, tmp: Path, db: Path, name: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = (tmp / f"{name}.log").open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "capd", "--db", f"sqlite:///{db}", "serve", "--host",
             "127.0.0.1", "--port", str(self.port)], cwd=tmp, env=capd_env(),
            stdout=self.log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
        deadline = time.monotonic() + START_S
        while True:
            assert self.proc.poll() is None, "capd serve exited"
            try:
                if httpx.get(f"{self.url}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "capd serve never became healthy"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=15)
        self.log.close()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[list[Served]]:
    started: list[Served] = []
    yield started
    for server in started:
        server.stop()


def books(db: Path) -> dict[int, tuple[int, int, int, int]]:
    """Per account: balance, reserved, ledger sum, reservations of open tasks."""
    conn = sqlite3.connect(db)
    try:
        return {row[0]: row[1:] for row in conn.execute(
            "SELECT a.id, a.balance_units, a.reserved_units,"
            " (SELECT COALESCE(SUM(amount_units), 0) FROM ledger l WHERE l.account_id = a.id),"
            " (SELECT COALESCE(SUM(reserved_units), 0) FROM tasks t WHERE t.account_id = a.id"
            "  AND t.state IN ('queued', 'leased'))"
            " FROM accounts a")}
    finally:
        conn.close()


def traffic(url: str, keys: list[str], token: str, stop: threading.Event,
            done: list[int]) -> None:
    """Create, lease and complete tasks (solved and failed) until told to stop."""
    with httpx.Client(base_url=url, timeout=10) as client:
        n = 0
        while not stop.is_set():
            for key in keys:
                answer = client.post("/createTask", json={"clientKey": key, "task": TASK}).json()
                assert answer["errorId"] == 0, answer
            leases = client.post("/worker/v1/lease", json={
                "workerToken": token, "types": [TYPE], "max": 50, "waitSeconds": 0}).json()
            for lease in leases["leases"]:
                n += 1
                body: dict[str, Any] = {"workerToken": token, "leaseId": lease["leaseId"]}
                if n % 3:
                    body["solution"] = {"token": f"tok-{n}"}
                else:
                    body["errorCode"] = "ERROR_CAPTCHA_UNSOLVABLE"
                assert client.post("/worker/v1/complete", json=body).json()["errorId"] == 0
                done.append(lease["taskId"])


def test_backup_while_serving_is_a_consistent_copy(tmp_path: Path,
                                                   served: list[Served]) -> None:
    db, copy = tmp_path / "capd.db", tmp_path / "backup" / "copy.db"
    copy.parent.mkdir()
    keys = []
    for balance in ("1", "2.5", "7"):
        made = cli(tmp_path, db, "account", "create", "--balance", balance)
        assert made.returncode == 0, made.stderr
        keys.append(made.stdout.splitlines()[-1])
    made = cli(tmp_path, db, "worker-token", "create", "--types", TYPE)
    assert made.returncode == 0, made.stderr
    token = made.stdout.splitlines()[-1]
    server = Served(tmp_path, db, "live")
    served.append(server)
    marked = httpx.post(f"{server.url}/worker/v1/lease", json={
        "workerToken": token, "types": [TYPE], "waitSeconds": 0}).json()
    assert marked["errorId"] == 0, marked  # the type is served from now on

    stop, done = threading.Event(), []
    failures: list[BaseException] = []

    def run() -> None:
        try:
            traffic(server.url, keys, token, stop, done)
        except BaseException as exc:  # reported by the test thread
            failures.append(exc)

    writer = threading.Thread(target=run, daemon=True)
    writer.start()
    try:
        deadline = time.monotonic() + START_S
        while len(done) < 30:  # solved and failed tasks are in the books before the copy
            assert not failures and time.monotonic() < deadline, failures
            time.sleep(0.05)
        backed = cli(tmp_path, db, "backup", str(copy))  # while the writer goes on
    finally:
        stop.set()
        writer.join(timeout=30)
    assert not failures, failures
    assert backed.returncode == 0 and backed.stderr == "", backed
    assert backed.stdout.startswith(f"backed up {db} to {copy}"), backed.stdout

    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
    assert sorted(p.name for p in copy.parent.iterdir()) == ["copy.db"]  # no -wal beside it
    copied = books(copy)
    assert len(copied) == len(keys)
    for account_id, (balance, reserved, ledger, open_reserved) in copied.items():
        assert balance == ledger and reserved == open_reserved, (account_id, copied)
    conn = sqlite3.connect(copy)
    try:
        (charged,), = conn.execute("SELECT COUNT(*) FROM ledger WHERE kind = 'charge'")
    finally:
        conn.close()
    assert charged > 0  # solved tasks were charged before the copy was taken
    server.stop()

    # a fresh capd on the copy serves every account with that balance
    again = Served(tmp_path, copy, "restored")
    served.append(again)
    conn = sqlite3.connect(copy)
    try:  # getBalance: what is available, less open tasks' reservations
        expected = {row[0]: row[1] for row in conn.execute(
            "SELECT k.key_hash, a.balance_units - a.reserved_units FROM api_keys k"
            " JOIN accounts a ON a.id = k.account_id")}
    finally:
        conn.close()
    assert set(expected) == {secret_digest(key) for key in keys}
    for key in keys:
        answer = httpx.post(f"{again.url}/getBalance", json={"clientKey": key}).json()
        assert answer == {"errorId": 0,
                          "balance": expected[secret_digest(key)] / UNITS_PER_USD}, answer
    for account_id, (balance, _, ledger, _) in books(copy).items():
        assert balance == ledger, account_id


def test_backup_of_postgresql_points_to_pg_dump(tmp_path: Path) -> None:
    run = cli(tmp_path, "postgresql://capd:secret@127.0.0.1:1/capd", "backup",
              str(tmp_path / "copy.db"))
    assert run.returncode != 0 and run.stdout == "", run
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("capd: error:") and "pg_dump" in lines[0]
    assert "secret" not in run.stderr
    assert not (tmp_path / "copy.db").exists()


def test_backup_never_overwrites(tmp_path: Path) -> None:
    db = tmp_path / "capd.db"
    assert cli(tmp_path, db, "account", "create").returncode == 0
    existing = tmp_path / "old.db"
    existing.write_bytes(b"an older backup")
    run = cli(tmp_path, db, "backup", str(existing))
    assert run.returncode == 1 and run.stderr.startswith("capd: error:"), run
    assert existing.read_bytes() == b"an older backup"


def test_backup_of_a_missing_database_creates_nothing(tmp_path: Path) -> None:
    run = cli(tmp_path, tmp_path / "absent.db", "backup", str(tmp_path / "copy.db"))
    assert run.returncode == 1 and "no SQLite database" in run.stderr, run
    assert not (tmp_path / "copy.db").exists() and not (tmp_path / "absent.db").exists()


def test_backup_and_database_are_owner_only_under_umask_022(tmp_path: Path) -> None:
    """The database capd creates and the copy `capd backup` makes hold every key digest,
    worker token digest and open task's proxy credentials: 0600, whatever the umask."""
    import asyncio

    from capd.store.backup import backup_database
    from capd.store.sqlite import SQLiteStore

    db, copy = tmp_path / "capd.db", tmp_path / "copy.db"
    old = os.umask(0o022)
    try:
        store = SQLiteStore(str(db))
        asyncio.run(store.migrate())
        asyncio.run(store.close())
        backup_database(f"sqlite:///{db}", copy)
    finally:
        os.umask(old)
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600
