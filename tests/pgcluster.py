"""A throwaway PostgreSQL cluster for the tests and benchmarks: initdb in a temp folder,
run as an unprivileged user, listening on a loopback port only; stopped and removed after.

The server binaries come from Debian's ``postgresql`` package (``./run test`` installs it
when it is missing). fsync is off: the cluster lives for one test run.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path

USER = "capd"


def bin_dir() -> Path:
    """The folder holding initdb/pg_ctl/postgres."""
    for name in ("initdb", "pg_ctl"):
        found = shutil.which(name)
        if found and Path(found).resolve().parent.joinpath("postgres").exists():
            return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"), reverse=True)
    if not candidates:
        raise RuntimeError("PostgreSQL server binaries not found: install Debian's "
                           "'postgresql' package (./run test does this when it may)")
    return Path(candidates[0]).parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class PgCluster:
    def __init__(self) -> None:
        self.bin = bin_dir()
        self.base = Path(tempfile.mkdtemp(prefix="capd-pg-"))
        self.data = self.base / "data"
        self.port = _free_port()
        self._as: list[str] = []
        if os.geteuid() == 0:
            # PostgreSQL refuses to run as root: use the package's user, else nobody
            for name in ("postgres", "nobody"):
                try:
                    account = pwd.getpwnam(name)
                except KeyError:
                    continue
                os.chown(self.base, account.pw_uid, account.pw_gid)
                self._as = ["runuser", "-u", name, "--"]
                break
            else:
                raise RuntimeError("no unprivileged user to run PostgreSQL as")

    def _run(self, *args: str) -> None:
        subprocess.run([*self._as, *args], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.PIPE, cwd=self.base)

    def start(self) -> str:
        self._run(str(self.bin / "initdb"), "-D", str(self.data), "-U", USER, "-A", "trust",
                  "-E", "UTF8", "--no-sync", "--locale=C")
        options = (f"-p {self.port} -c listen_addresses=127.0.0.1 -k {self.base}"
                   " -c fsync=off -c synchronous_commit=off -c full_page_writes=off"
                   " -c max_connections=200")
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-o", options,
                  "-l", str(self.base / "log"), "-w", "-t", "60", "start")
        return self.url("postgres")

    def url(self, database: str) -> str:
        return f"postgresql://{USER}@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str) -> str:
        self._run(str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", USER,
                  "-d", "postgres", "-q", "-c", f'CREATE DATABASE "{name}"')
        return self.url(name)

    def create_schema(self, name: str) -> str:
        """A fresh, empty schema (much faster than a database); its URL sets search_path."""
        import asyncio

        import asyncpg

        async def create() -> None:
            conn = await asyncpg.connect(self.url("postgres"))
            try:
                await conn.execute(f'CREATE SCHEMA "{name}"')
            finally:
                await conn.close()

        asyncio.run(create())
        return f"{self.url('postgres')}?search_path={name}"

    def stop(self) -> None:
        try:
            if (self.data / "postmaster.pid").exists():
                self._run(str(self.bin / "pg_ctl"), "-D", str(self.data), "-m", "immediate",
                          "-w", "stop")
        finally:
            shutil.rmtree(self.base, ignore_errors=True)


def wait_until_ready(url: str, timeout_s: float = 30) -> None:
    import asyncio

    import asyncpg

    async def probe() -> None:
        conn = await asyncpg.connect(url)
        await conn.close()

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            asyncio.run(probe())
            return
        except (OSError, asyncpg.PostgresError):
            if time.monotonic() > deadline:
                raise
            time.sleep(0.1)
