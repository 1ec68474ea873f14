"""Versioned schema migrations, one folder per backend: NNNN_name.sql applied in order."""

from __future__ import annotations

from importlib import resources


def migration_scripts(backend: str) -> list[tuple[int, str]]:
    """(version, SQL text) of every migration of a backend, in order."""
    folder = resources.files(__package__).joinpath(backend)
    out = []
    for item in folder.iterdir():
        if item.name.endswith(".sql"):
            out.append((int(item.name.split("_", 1)[0]), item.read_text(encoding="utf-8")))
    return sorted(out)
