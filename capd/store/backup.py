"""``capd backup FILE``: a consistent copy of a SQLite database, taken while capd serves.

SQLite's online backup API (``sqlite3.Connection.backup``) copies every page inside one
read transaction; in WAL mode that transaction sees one committed state and blocks no
writer, so the copy is a snapshot as of one moment, taken without stopping the server.
The copy is a standalone file (rollback journal, no ``-wal`` beside it), created
owner-only (0600: it holds every API key and worker token digest), checked with
``PRAGMA integrity_check``. capd opens it like any database: ``--db sqlite:///FILE``.

PostgreSQL databases are not copied here: ``pg_dump`` is the tool for them.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from capd.errors import ConfigError
from capd.store import sqlite_path

BACKUP_FILE_MODE = 0o600
BUSY_TIMEOUT_S = 30  # waits this long for a writer's lock (the copy itself takes none)


class BackupError(Exception):
    """Raised when a backup cannot be made; the message is one line for the operator."""


@dataclass(frozen=True)
class BackupResult:
    source: Path
    target: Path
    pages: int
    size_bytes: int


def backup_database(database_url: str, target: str | os.PathLike[str]) -> BackupResult:
    """Copy the SQLite database of ``database_url`` to ``target``, a new file.

    Raises BackupError for a PostgreSQL URL (use pg_dump), a missing source, a target
    that already exists, or a copy that fails its integrity check; nothing is left at
    ``target`` then."""
    if database_url.startswith(("postgresql://", "postgres://")):
        raise BackupError("capd backup copies SQLite databases; back up PostgreSQL with"
                          " pg_dump (e.g. pg_dump --format=custom --file=FILE DBNAME)")
    if not database_url.startswith("sqlite://"):
        raise BackupError("capd backup needs a sqlite:/// database URL")
    try:
        source = Path(sqlite_path(database_url))
    except ConfigError as exc:
        raise BackupError(str(exc)) from None
    if str(source) == ":memory:" or not source.is_file():
        raise BackupError(f"no SQLite database at {source}")
    destination = Path(target)
    try:
        # O_EXCL: never overwrite (an older backup, or the live database by mistake)
        fd = os.open(destination, os.O_WRONLY | os.O_CREAT | os.O_EXCL, BACKUP_FILE_MODE)
    except FileExistsError:
        raise BackupError(f"{destination} exists; choose a new file name") from None
    except OSError as exc:
        raise BackupError(f"cannot create {destination}: {exc.strerror}") from None
    try:
        os.fchmod(fd, BACKUP_FILE_MODE)  # exactly 0600, whatever the umask
    finally:
        os.close(fd)
    try:
        pages = _copy(source, destination)
    except BaseException:
        with contextlib.suppress(OSError):
            destination.unlink()
        raise
    return BackupResult(source, destination, pages, destination.stat().st_size)


def _copy(source: Path, destination: Path) -> int:
    src = sqlite3.connect(source, timeout=BUSY_TIMEOUT_S)
    try:
        dst = sqlite3.connect(destination)
        try:
            try:
                src.backup(dst)  # every page in one step: one read transaction
            except sqlite3.Error as exc:
                raise BackupError(f"copying {source}: {exc}") from None
            # a standalone file: the copy leaves WAL mode, so no -wal file goes with it
            dst.execute("PRAGMA journal_mode = DELETE").fetchall()
            (verdict,), = dst.execute("PRAGMA integrity_check").fetchall()
            if verdict != "ok":
                raise BackupError(f"the copy of {source} fails its integrity check: {verdict}")
            (pages,), = dst.execute("PRAGMA page_count").fetchall()
            return int(pages)
        finally:
            dst.close()
    finally:
        src.close()
