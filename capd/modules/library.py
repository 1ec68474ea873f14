"""Module files and the modules directory.

A module file is a zip archive holding two or three members, all data:

- ``manifest.json``: ``{"format": "capd-module", "format_version": 1 to 3, "name",
  "charset", "model_sha256", ...}`` plus what training measured (samples, accuracy, the
  general engine's accuracy on the same held-out images, the confidence calibration);
- ``model.onnx``: the network (or networks, one output each), run by ONNX Runtime (never
  unpickled, never imported);
- ``rest.onnx``, in a module of several networks that reads with its first ones before
  the others (manifest ``first_members``, ``rest_sha256``): the later networks, run only
  when the first ones disagree or are unsure.

Reading one checks the archive, the manifest's fields and types, and the SHA-256 of
each model against the manifest; anything else (a corrupt download, another
program's zip, a truncated copy) raises ModuleError with one line saying why.

The directory (setting ``modules_dir``; by default ``capd-modules`` beside the SQLite
file) holds one folder per module name, and in it one file per version:
``<dir>/<name>/<version>.capdmodule`` (version 1, 2, ...). Every node of a deployment
points at the same directory (a shared mount), so a module trained or imported on one
node is read by all. A version is written to a temporary file in the same folder and
renamed into place, so a reader sees a whole file or none; removal renames the folder
away before deleting it.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
import shutil
import tempfile
import time
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from capd.constants import MAX_TASK_DEPTH, MODULE_MAX_FILE_BYTES, MODULES_DIR_NAME
from capd.solving.ocr.finetuned_engine import GREY_MODES

FORMAT = "capd-module"
# the newest format this capd reads; pack writes the oldest that reads a module right:
# 3 for a module whose later networks are in ``rest.onnx`` (a reader of format 2 would
# read with its first networks only), 2 for a module read wider than its images
# (manifest ``stretch``), which a reader of format 1 would read at the wrong width, else 1
FORMAT_VERSION = 3
SUFFIX = ".capdmodule"
MANIFEST = "manifest.json"
MODEL = "model.onnx"
REST = "rest.onnx"
# what a key option can name (domain/keys.py), lower case: tasks compare it lower-cased
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,63}$")
RESERVED_NAMES = frozenset({"universal"})  # what a task without a module reads with
MAX_LABEL_LENGTH = 64  # the longest answer a manifest's ``lengths`` may name
MAX_VOTE_WIDTHS = 8  # the most widths a manifest's ``vote`` may read an image at again
# a manifest's ``stretch`` (the width factor a module reads images at) lies in this range
MIN_STRETCH, MAX_STRETCH = 0.5, 3.0
MAX_MEMBERS = 4  # the most networks ``capd module train --members`` trains for one module
# the most networks that train at the same time (``--lanes``), and the widest training
# image (pixels at 64 high, stretched) at which two do by default (capd.modules.train)
MAX_LANES = 2
LANE_MAX_WIDTH = 400
_VERSION_RE = re.compile(r"^([1-9][0-9]{0,8})\.capdmodule$")
# manifest field -> the types it may hold (required fields; others are kept as given)
_REQUIRED: dict[str, tuple[type, ...]] = {
    "format": (str,), "format_version": (int,), "name": (str,), "charset": (list,),
    "model_sha256": (str,), "input_height": (int,),
}


class ModuleError(Exception):
    """A module name, file or directory that cannot be used; the message is one line."""


def check_name(name: str) -> str:
    """The name itself when it can name a module, else ModuleError."""
    if not NAME_RE.match(name):
        raise ModuleError(f"module name {name!r}: use 1-64 of a-z 0-9 _ - (lower case),"
                          " starting with a letter or digit")
    if name in RESERVED_NAMES:
        raise ModuleError(f"module name {name!r} is reserved (tasks without a module use it)")
    return name


@dataclass(frozen=True)
class Module:
    """A module file's validated content."""

    manifest: dict[str, Any]
    model: bytes
    rest: bytes = b""  # the later networks (manifest first_members), else empty

    @property
    def name(self) -> str:
        return str(self.manifest["name"])

    @property
    def charset(self) -> list[str]:
        return list(self.manifest["charset"])


def pack(manifest: dict[str, Any], model: bytes, rest: bytes = b"") -> bytes:
    """A module file's bytes: the manifest (with the models' checksums and the format
    marker set), the model and, for a module that reads with its first networks before
    the others (manifest ``first_members``), the later networks."""
    if bool(rest) != ("first_members" in manifest):
        raise ValueError("rest.onnx goes with manifest first_members, and only with it")
    version = 3 if rest else 1 if manifest.get("stretch", 1.0) == 1.0 else 2
    meta = {**manifest, "format": FORMAT, "format_version": version,
            "model_sha256": hashlib.sha256(model).hexdigest()}
    if rest:
        meta["rest_sha256"] = hashlib.sha256(rest).hexdigest()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(MANIFEST, json.dumps(meta, indent=1, ensure_ascii=False))
        zf.writestr(MODEL, model)
        if rest:
            zf.writestr(REST, rest)
    data = buf.getvalue()
    unpack(data)  # what is written is always readable
    return data


def unpack(data: bytes, origin: str = "module file") -> Module:
    """Validate a module file's bytes; ModuleError saying why when it is not one."""
    if len(data) > MODULE_MAX_FILE_BYTES:
        raise ModuleError(f"{origin}: larger than {MODULE_MAX_FILE_BYTES} bytes")
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            infos = {i.filename: i for i in zf.infolist()}
            if set(infos) not in ({MANIFEST, MODEL}, {MANIFEST, MODEL, REST}):
                raise ModuleError(f"{origin}: not a capd module (members "
                                  f"{sorted(infos)[:4]}, expected {MANIFEST} and {MODEL},"
                                  f" perhaps {REST})")
            for info in infos.values():
                if info.file_size > MODULE_MAX_FILE_BYTES:
                    raise ModuleError(f"{origin}: {info.filename} unpacks too large")
            raw_manifest = zf.read(MANIFEST)
            model = zf.read(MODEL)
            rest = zf.read(REST) if REST in infos else b""
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError,
            NotImplementedError) as exc:
        raise ModuleError(f"{origin}: not a capd module (corrupt or not a zip: {exc})"
                          ) from None
    try:
        manifest = json.loads(raw_manifest.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        raise ModuleError(f"{origin}: its {MANIFEST} is not JSON") from None
    if not isinstance(manifest, dict):
        raise ModuleError(f"{origin}: its {MANIFEST} is not a JSON object")
    for key, types in _REQUIRED.items():
        value = manifest.get(key)
        if not isinstance(value, types) or isinstance(value, bool):
            raise ModuleError(f"{origin}: manifest field {key!r} missing or of the wrong type")
    if manifest["format"] != FORMAT:
        raise ModuleError(f"{origin}: not a capd module (format {manifest['format']!r})")
    if manifest["format_version"] > FORMAT_VERSION:
        raise ModuleError(f"{origin}: module format version {manifest['format_version']}"
                          f" is newer than this capd reads ({FORMAT_VERSION})")
    try:
        check_name(manifest["name"])
    except ModuleError as exc:
        raise ModuleError(f"{origin}: {exc}") from None
    charset = manifest["charset"]
    if not charset or not all(isinstance(c, str) and len(c) == 1 for c in charset) or len(
            set(charset)) != len(charset):
        raise ModuleError(f"{origin}: manifest charset must be distinct single characters")
    if hashlib.sha256(model).hexdigest() != manifest["model_sha256"]:
        raise ModuleError(f"{origin}: checksum mismatch: {MODEL} is damaged")
    first = manifest.get("first_members")
    if (first is None) != (not rest):
        raise ModuleError(f"{origin}: manifest first_members and {REST} go together")
    if rest:
        if not isinstance(first, int) or isinstance(first, bool) or first < 1:
            raise ModuleError(f"{origin}: manifest first_members must be a whole number"
                              " of at least 1")
        if hashlib.sha256(rest).hexdigest() != manifest.get("rest_sha256"):
            raise ModuleError(f"{origin}: checksum mismatch: {REST} is damaged")
    cal = manifest.get("calibration")
    if cal is not None and not _valid_calibration(cal):
        raise ModuleError(f"{origin}: manifest calibration is malformed")
    look = manifest.get("second_look")
    if look is not None and not _valid_second_look(look):
        raise ModuleError(f"{origin}: manifest second_look is malformed")
    vote = manifest.get("vote")
    if vote is not None and not _valid_vote(vote):
        raise ModuleError(f"{origin}: manifest vote is malformed")
    lengths = manifest.get("lengths")
    if lengths is not None and not _valid_lengths(lengths):
        raise ModuleError(f"{origin}: manifest lengths is malformed")
    if manifest.get("grey", "luminance") not in GREY_MODES:
        raise ModuleError(f"{origin}: manifest grey must be one of {', '.join(GREY_MODES)}")
    stretch = manifest.get("stretch", 1.0)
    if not isinstance(stretch, int | float) or isinstance(stretch, bool) \
            or not MIN_STRETCH <= stretch <= MAX_STRETCH:
        raise ModuleError(f"{origin}: manifest stretch must be a number within"
                          f" {MIN_STRETCH:g}-{MAX_STRETCH:g}")
    _depth(manifest, origin)
    return Module(manifest, model, rest)


def _valid_calibration(cal: Any) -> bool:
    if not isinstance(cal, dict):
        return False
    xs, ys = cal.get("raw"), cal.get("calibrated")
    return (isinstance(xs, list) and isinstance(ys, list) and len(xs) == len(ys) >= 2
            and all(isinstance(v, int | float) and not isinstance(v, bool) for v in xs + ys))


def _valid_second_look(look: Any) -> bool:
    """{"below": raw confidence in [0, 1], "stretch": width factor in (1, 3]}."""
    if not isinstance(look, dict):
        return False
    below, stretch = look.get("below"), look.get("stretch")
    if not isinstance(below, int | float) or not isinstance(stretch, int | float) \
            or isinstance(below, bool) or isinstance(stretch, bool):
        return False
    return 0.0 <= below <= 1.0 and 1.0 < stretch <= 3.0


def _valid_vote(vote: Any) -> bool:
    """{"below": raw confidence in [0, 1], "stretches": 1 to MAX_VOTE_WIDTHS width
    factors, each within 0.5-3}."""
    if not isinstance(vote, dict):
        return False
    below, stretches = vote.get("below"), vote.get("stretches")
    if not isinstance(below, int | float) or isinstance(below, bool) \
            or not isinstance(stretches, list) or not 1 <= len(stretches) <= MAX_VOTE_WIDTHS:
        return False
    return 0.0 <= below <= 1.0 and all(
        isinstance(s, int | float) and not isinstance(s, bool) and 0.5 <= s <= 3.0
        for s in stretches)


def _valid_lengths(lengths: Any) -> bool:
    """[shortest, longest]: the answer lengths the module reads, 1 <= shortest <= longest
    <= MAX_LABEL_LENGTH."""
    return (isinstance(lengths, list) and len(lengths) == 2
            and all(isinstance(n, int) and not isinstance(n, bool) for n in lengths)
            and 1 <= lengths[0] <= lengths[1] <= MAX_LABEL_LENGTH)


def _depth(value: Any, origin: str, level: int = 0) -> None:
    if level > MAX_TASK_DEPTH:
        raise ModuleError(f"{origin}: manifest nested too deep")
    if isinstance(value, dict):
        for v in value.values():
            _depth(v, origin, level + 1)
    elif isinstance(value, list):
        for v in value:
            _depth(v, origin, level + 1)


def default_dir(database_url: str) -> str:
    """``capd-modules`` beside the SQLite file; in the working directory for PostgreSQL
    (set ``modules_dir`` to a path every node shares)."""
    if database_url.startswith("sqlite:///"):
        path = database_url[len("sqlite:///"):].split("?", 1)[0]
        if path and path != ":memory:":
            return str(Path(path).resolve().parent / MODULES_DIR_NAME)
    return str(Path.cwd() / MODULES_DIR_NAME)


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a
    rename: a reader sees the old file, or none, or the whole new one."""
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@dataclass(frozen=True)
class Entry:
    """One stored module version."""

    name: str
    version: int
    path: Path
    mtime: float


class Library:
    """The modules directory (see the module docstring)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)

    def _folder(self, name: str) -> Path:
        return self.root / check_name(name)

    def versions(self, name: str) -> list[Entry]:
        """The stored versions of a module, oldest first ([] when it has none)."""
        folder = self._folder(name)
        out = []
        try:
            names = os.listdir(folder)
        except (FileNotFoundError, NotADirectoryError):
            return []
        for fname in names:
            m = _VERSION_RE.match(fname)
            if m:
                path = folder / fname
                try:
                    mtime = path.stat().st_mtime
                except FileNotFoundError:  # removed meanwhile
                    continue
                out.append(Entry(name, int(m.group(1)), path, mtime))
        return sorted(out, key=lambda e: e.version)

    def latest(self) -> dict[str, Entry]:
        """Every module's newest version, by name: what a node routes tasks to."""
        out: dict[str, Entry] = {}
        try:
            names = sorted(os.listdir(self.root))
        except FileNotFoundError:
            return out
        for name in names:
            if not NAME_RE.match(name) or name in RESERVED_NAMES:
                continue
            found = self.versions(name)
            if found:
                out[name] = found[-1]
        return out

    def entry(self, name: str) -> Entry:
        """A module's newest version; ModuleError when there is no such module."""
        found = self.versions(name)
        if not found:
            raise ModuleError(f"no module named {name!r} in {self.root}")
        return found[-1]

    def load(self, entry: Entry) -> Module:
        try:
            data = entry.path.read_bytes()
        except OSError as exc:
            raise ModuleError(f"{entry.path}: cannot read ({exc.strerror})") from None
        return unpack(data, str(entry.path))

    def save(self, data: bytes) -> Entry:
        """Store a module file's bytes (validated) as its name's next version."""
        module = unpack(data)
        folder = self._folder(module.name)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ModuleError(f"cannot create {folder}: {exc.strerror}") from None
        found = self.versions(module.name)
        version = found[-1].version + 1 if found else 1
        while True:  # another node may store the same name at the same moment
            path = folder / f"{version}{SUFFIX}"
            fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=folder)
            try:
                with os.fdopen(fd, "wb") as fh:
                    fh.write(data)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.link(tmp, path)  # fails, rather than replaces, when the version exists
            except FileExistsError:
                version += 1
                continue
            finally:
                with contextlib.suppress(OSError):
                    os.unlink(tmp)
            return Entry(module.name, version, path, time.time())

    def remove(self, name: str) -> int:
        """Delete every version of a module; how many there were (ModuleError: none)."""
        found = self.versions(name)
        if not found:
            raise ModuleError(f"no module named {name!r} in {self.root}")
        folder = self._folder(name)
        gone = self.root / f".removed-{name}-{os.getpid()}-{time.monotonic_ns()}"
        os.replace(folder, gone)  # readers stop seeing it at once
        shutil.rmtree(gone, ignore_errors=True)
        return len(found)
