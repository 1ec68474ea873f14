"""Labelled samples from answers: an ImageToText task that names a stored module and is
solved through the worker protocol (a person, or any external solver) leaves its image
and answer as a sample of that module; a report that the answer was wrong
(reportIncorrect*) deletes it again; ``capd module samples NAME --export DIR`` writes
the samples in the training format, so ``capd module train NAME --data DIR`` closes the
loop.

Samples live beside the module's versions: ``<modules_dir>/<name>/samples/<task id>.img``
and ``<task id>.txt`` (the answer), written atomically. They follow the payload
retention rule (``payload_retention_s``): a sample older than that is deleted when the
module's samples are next written or exported, as the task's own payload is pruned.
Only stored modules collect samples, so clients cannot create folders by naming modules.
"""

from __future__ import annotations

import contextlib
import csv
import io
import logging
import os
from collections.abc import Callable
from pathlib import Path

from PIL import Image

from capd.constants import MODULE_MAX_SAMPLES
from capd.domain.tasks import ValidationRules
from capd.modules.library import (
    NAME_RE,
    RESERVED_NAMES,
    Library,
    ModuleError,
    atomic_write,
    check_name,
)
from capd.solving.imagetask import IMAGE_TYPE, image_bytes
from capd.store.base import Task, TaskState

log = logging.getLogger("capd.modules")


class SampleBox:
    """The samples of every module in one modules directory."""

    def __init__(self, library: Library, rules: ValidationRules, retention_s: float,
                 clock: Callable[[], float]) -> None:
        self.library = library
        self.rules = rules
        self.retention_s = retention_s
        self.clock = clock

    def folder(self, name: str) -> Path:
        return self.library.root / check_name(name) / "samples"

    @staticmethod
    def module_of(task: Task) -> str | None:
        image = task.options.get("image")
        module = image.get("module") if isinstance(image, dict) else None
        return module if isinstance(module, str) else None

    def keep(self, task: Task) -> bool:
        """Keep a worker-solved ImageToText task of a stored module as a sample."""
        module = self.module_of(task)
        solution = task.solution or {}
        text = solution.get("text")
        if (task.type != IMAGE_TYPE or task.state != TaskState.SOLVED or not module
                or not NAME_RE.match(module) or module in RESERVED_NAMES
                or not isinstance(text, str) or not text):
            return False  # "universal" (no module) and names no module can have
        try:
            if not self.library.versions(module):
                return False
            folder = self.folder(module)
            folder.mkdir(exist_ok=True)
            self.prune(module)
            if len(os.listdir(folder)) >= 2 * MODULE_MAX_SAMPLES:
                return False
            image = image_bytes(task.payload, self.rules)
            if not image:
                return False
            atomic_write(folder / f"{task.id}.img", image)
            atomic_write(folder / f"{task.id}.txt", text.encode("utf-8"))
        except (ModuleError, OSError) as exc:
            log.warning("sample of task %d not kept: %s", task.id, exc)
            return False
        return True

    def forget(self, task: Task) -> None:
        """A task reported incorrect is no sample."""
        module = self.module_of(task)
        if not module:
            return
        with contextlib.suppress(ModuleError, OSError):
            folder = self.folder(module)
            for suffix in (".txt", ".img"):  # the label first: an image alone is no sample
                with contextlib.suppress(FileNotFoundError):
                    (folder / f"{task.id}{suffix}").unlink()

    def prune(self, name: str) -> int:
        """Delete samples older than the retention; how many went."""
        folder = self.folder(name)
        cutoff = self.clock() - self.retention_s
        gone = 0
        try:
            entries = list(os.scandir(folder))
        except FileNotFoundError:
            return 0
        for entry in entries:
            with contextlib.suppress(FileNotFoundError):
                if entry.stat().st_mtime < cutoff:
                    os.unlink(entry.path)
                    gone += 1
        return gone

    def export(self, name: str, target: str | os.PathLike[str]) -> int:
        """Write the module's samples as ``target``/labels.csv and images; how many."""
        self.prune(name)
        folder = self.folder(name)
        out = Path(target)
        out.mkdir(parents=True, exist_ok=True)
        if (out / "labels.csv").exists():
            raise ModuleError(f"{out}: already holds a labels.csv")
        rows = []
        try:
            labels = sorted(p for p in folder.iterdir() if p.suffix == ".txt")
        except FileNotFoundError:
            labels = []
        for label in labels:
            try:
                text = label.read_text(encoding="utf-8")
                image = label.with_suffix(".img").read_bytes()
            except (FileNotFoundError, UnicodeDecodeError):
                continue
            ext = _extension(image)
            name_out = f"{label.stem}.{ext}"
            atomic_write(out / name_out, image)
            rows.append((name_out, text))
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(["file", "text"])
        writer.writerows(rows)
        atomic_write(out / "labels.csv", buf.getvalue().encode("utf-8"))
        return len(rows)


def _extension(image: bytes) -> str:
    try:
        with Image.open(io.BytesIO(image)) as im:
            fmt = (im.format or "").lower()
    except Exception:  # the training check reports an unreadable image by name
        fmt = ""
    return {"jpeg": "jpg"}.get(fmt, fmt or "img")
