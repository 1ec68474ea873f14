"""Persistence behind one interface (``capd.store.base.Store``)."""

from __future__ import annotations

from capd.errors import ConfigError
from capd.store.base import Store


def sqlite_path(url: str) -> str:
    """The file path of a SQLite URL, read as SQLAlchemy does.

    ``sqlite:///capd.db`` is relative to the working directory, ``sqlite:////var/capd.db``
    absolute, ``sqlite:///:memory:`` an in-memory database.
    """
    rest = url[len("sqlite://"):]
    if not rest.startswith("/") or len(rest) < 2:
        raise ConfigError(f"database URL {url!r}: expected sqlite:///path/to/file.db")
    return rest[1:]


def open_store(url: str, *, database_clock: bool = True) -> Store:
    """The Store backend a database URL names; not yet migrated.

    ``memory://`` is a store in process memory (``capd.store.memory``), for tests. On
    PostgreSQL, lease expiry and task deadlines follow the database's clock, which every
    node shares, not the ``now`` each node passes (issue 12); ``database_clock=False``
    makes them follow the caller's ``now`` as SQLite and memory do, for tests that drive
    time by hand."""
    if url == "memory://":
        from capd.store.memory import MemoryStore

        return MemoryStore()
    if url.startswith("sqlite://"):
        from capd.store.sqlite import SQLiteStore

        return SQLiteStore(sqlite_path(url))
    if url.startswith(("postgresql://", "postgres://")):
        from capd.store.postgres import PostgresStore

        return PostgresStore(url, database_clock=database_clock)
    raise ConfigError(f"database URL {url!r}: unsupported scheme (use sqlite:///path)")


def is_database_error(exc: BaseException) -> bool:
    """Whether ``exc`` came from a database driver (an outage, a constraint, a refused
    login): callers report it in one line without naming the drivers themselves."""
    if isinstance(exc, OSError):  # StoreUnavailable included
        return True
    root = type(exc).__module__.split(".")[0]
    return root in ("sqlite3", "_sqlite3", "asyncpg")
