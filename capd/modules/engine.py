"""Reading with custom modules: one module's engine, and the router a node's OCR pool
runs, which sends a task naming a stored module to that module and every other task to
the general engine.

The router looks at the modules directory at most once per ``poll_s`` (checked when a
task is read, and at start), loads new or changed versions, and forgets removed ones: a
module trained or imported on any node is in use everywhere within ``poll_s`` plus one
read, without a restart. A version that fails to load is logged and skipped (the
previous version, if any, keeps serving).
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Callable

import numpy as np
from PIL import Image

from capd.domain.tasks import ImageSpec
from capd.modules.library import Entry, Library, Module, ModuleError
from capd.solving.ocr.base import Reading, Recogniser, open_image
from capd.solving.ocr.finetuned_engine import grey64, to_input
from capd.solving.ocr.onnx_engine import Calibration, CtcEngine, onnx_session
from capd.solving.ocr.post import (
    decode_by_members,
    decode_by_vote,
    decode_with_second_look,
    sure_agreement,
)

log = logging.getLogger("capd.modules")
_ALIASES = {"*": "×"}


class ModuleEngine(CtcEngine):
    """A trained module: its ONNX network (ddddocr's architecture, 64 pixels high, one
    frame per 8 columns) over its own charset, masked CTC decoding, calibrated
    confidence when the manifest has a calibration, and, when the manifest has a
    ``second_look``, a second reading of the image stretched wider when the first one's
    raw confidence is below its trigger (the more confident reading is kept), as the
    ``finetuned`` engine does. A ``vote`` ({"below", "stretches"}) supersedes it: an
    unsure first reading is read again at each of several widths and the answer most of
    them give wins (post.decode_by_vote); a capd older than the vote reads such a module
    with its second look. With ``lengths`` ([shortest, longest]: the lengths of its
    training labels) it answers in those lengths (post.ctc_best_path_chars: the likeliest
    reading of an allowed length when the likeliest reading is not one), within the
    task's own bounds (``bounded``). With ``stretch``, every image is read that many
    times wider (the width it was trained at; a second look stretches it further).
    A module of several networks (``members``, trained one after the other) has one
    output per network in its ONNX file; it reads with all of them
    (post.decode_by_members: when they disagree or are unsure, every network reads at
    every width of the vote and the answer most readings give wins). A capd older than
    members reads such a file's first output only, as a module of one network.
    With ``first_members`` (the later networks in the file's ``rest.onnx``), its first
    networks read first, and when they all give the same text, each sure enough to
    end the vote early (post.sure_agreement), that is the answer and the later ones never
    run; otherwise every network reads as above."""

    def __init__(self, module: Module) -> None:
        cal = module.manifest.get("calibration")
        calibration = Calibration(cal["raw"], cal["calibrated"]) if cal else None
        super().__init__(["", *module.charset], _ALIASES, calibration)
        self.name = f"module:{module.name}"
        try:  # the first networks' session, then the later ones' (first_members)
            self._sessions = [onnx_session(m) for m in (module.model, module.rest) if m]
        except Exception as exc:  # ONNX Runtime raises its own types for a bad graph
            raise ModuleError(f"module {module.name}: its model does not load: {exc}"
                              ) from None
        self._input = self._sessions[0].get_inputs()[0].name
        if any(s.get_inputs()[0].name != self._input for s in self._sessions):
            raise ModuleError(f"module {module.name}: its two models take different inputs")
        outputs = [len(s.get_outputs()) for s in self._sessions]
        self._members = sum(outputs)
        self._first = outputs[0] if len(outputs) > 1 else 0  # 0: all networks at once
        if self._first != module.manifest.get("first_members", 0):
            raise ModuleError(f"module {module.name}: manifest first_members says"
                              f" {module.manifest.get('first_members')}, the models"
                              f" {self._first or 'no rest'}")
        self._classes = len(module.charset) + 1
        lengths = module.manifest.get("lengths")  # [shortest, longest], checked on load
        self._lengths = (int(lengths[0]), int(lengths[1])) if lengths else None
        look = module.manifest.get("second_look")
        self._second_below = float(look["below"]) if look else 0.0
        self._second_stretch = float(look["stretch"]) if look else 1.0
        vote = module.manifest.get("vote")  # checked on load; it supersedes second_look
        self._vote_below = float(vote["below"]) if vote else 0.0
        self._vote_stretches = [float(s) for s in vote["stretches"]] if vote else []
        self._grey = str(module.manifest.get("grey", "luminance"))
        self._stretch = float(module.manifest.get("stretch", 1.0))  # checked on load
        letters = [c for c in module.charset if c.isalpha()]
        # a charset with letters in one case only (most schemes): a case-insensitive task
        # is decoded in that case and lower-cased, since there is no partner to fold with
        self._one_case = bool(letters) and (all(c.isupper() for c in letters)
                                            or all(c.islower() for c in letters))

    def frames(self, img: Image.Image, stretch: float = 1.0) -> np.ndarray:
        """The (first) network's (frames, classes) logits at this width factor."""
        return self.member_frames(img, stretch, slice(0, 1))[0]

    def member_frames(self, img: Image.Image, stretch: float = 1.0,
                      which: slice = slice(None)) -> list[np.ndarray]:
        """Every network's (frames, classes) logits at this width factor (in a module
        with first_members, ``which`` selects the first networks' session, the later
        ones' or both)."""
        return self._run(self._input_at(img, stretch), which)

    def _input_at(self, img: Image.Image, stretch: float) -> np.ndarray:
        """The network input: the image read at this width factor of the module's own."""
        return to_input(grey64(img, self._stretch * stretch, self._grey))

    def _run(self, x: np.ndarray, which: slice) -> list[np.ndarray]:
        """The selected sessions' networks' logits for the network input ``x``."""
        out = []
        for member in (m for s in self._sessions[which] for m in s.run(None, {self._input: x})):
            logits: np.ndarray = member.reshape(member.shape[0], -1)
            if logits.shape[1] != self._classes:
                raise ModuleError(f"{self.name}: the model has {logits.shape[1]} outputs,"
                                  f" the charset {self._classes}")
            out.append(logits)
        return out

    def read(self, image: bytes, spec: ImageSpec) -> Reading:
        if self._one_case and not spec.case_sensitive:
            reading = self._read(image, dataclasses.replace(spec, case_sensitive=True))
            return dataclasses.replace(reading, text=reading.text.lower())
        return self._read(image, spec)

    def _read(self, image: bytes, spec: ImageSpec) -> Reading:
        if self._lengths is not None:  # (no bound applies to arithmetic: length_bounds)
            spec = bounded(spec, *self._lengths)
        img = open_image(image)

        def frames_at(stretch: float) -> np.ndarray:
            return self.frames(img, stretch)

        if self._members > 1:  # (without a vote: the networks' readings at width 1.0)
            below = self._vote_below if self._vote_stretches else 1.0
            at_one: list[np.ndarray] = []
            if self._first:  # the first networks alone, and the rest only if they must
                x = self._input_at(img, 1.0)
                at_one = self._run(x, slice(0, 1))
                agreed = sure_agreement(
                    [self._decoder.decode_chars(f, spec) for f in at_one], below)
                if agreed is not None:
                    return self.finish(*agreed, spec)
                at_one += self._run(x, slice(1, None))

            def member_frames_at(stretch: float) -> list[np.ndarray]:
                return at_one if at_one and stretch == 1.0 else self.member_frames(img, stretch)

            text, chars = decode_by_members(self._decoder, member_frames_at, spec, below,
                                            self._vote_stretches)
        elif self._vote_stretches:
            text, chars = decode_by_vote(self._decoder, frames_at, spec, self._vote_below,
                                         self._vote_stretches)
        else:
            text, chars = decode_with_second_look(self._decoder, frames_at, spec,
                                                  self._second_below, self._second_stretch)
        return self.finish(text, chars, spec)


def bounded(spec: ImageSpec, shortest: int, longest: int) -> ImageSpec:
    """The task's length bounds narrowed to a module's (the lengths it was trained on);
    where the two do not overlap, the task's own bounds: the client knows its site."""
    low = max(spec.min_length, shortest)
    high = min(spec.max_length or longest, longest)
    if low > high:
        return spec
    return dataclasses.replace(spec, min_length=low, max_length=high)


class ModuleRouter:
    """A Recogniser: tasks naming a stored module read with it, the rest with
    ``general`` (see the module docstring)."""

    def __init__(self, general: Recogniser, library: Library, poll_s: float,
                 monotonic: Callable[[], float] = time.monotonic,
                 load: Callable[[Module], Recogniser] = ModuleEngine) -> None:
        self.general = general
        self.name = general.name
        self.library = library
        self.poll_s = poll_s
        self._monotonic = monotonic
        self._load = load
        self._lock = threading.Lock()
        self._engines: dict[str, tuple[Entry, Recogniser]] = {}
        self._failed: dict[str, Entry] = {}
        self._checked = -float("inf")
        self.refresh()

    def modules(self) -> dict[str, int]:
        """The modules in use here: name -> version."""
        with self._lock:
            return {name: entry.version for name, (entry, _) in self._engines.items()}

    def refresh(self) -> None:
        """Look at the directory now: load new or changed versions, drop removed ones."""
        with self._lock:
            self._refresh_locked()

    def _refresh_locked(self) -> None:
        self._checked = self._monotonic()
        try:
            latest = self.library.latest()
        except OSError as exc:
            log.warning("modules directory %s unreadable: %s", self.library.root, exc)
            return
        for name in list(self._engines):
            if name not in latest:
                del self._engines[name]
                log.info("module %s removed", name)
        for name, entry in latest.items():
            have = self._engines.get(name)
            if have and (have[0].version, have[0].mtime) == (entry.version, entry.mtime):
                continue
            if self._failed.get(name) == entry:
                continue
            try:
                engine = self._load(self.library.load(entry))
            except ModuleError as exc:
                self._failed[name] = entry
                log.warning("module %s version %d not loaded: %s", name, entry.version, exc)
                continue
            self._failed.pop(name, None)
            self._engines[name] = (entry, engine)
            log.info("module %s version %d in use", name, entry.version)

    def engine_for(self, module: str) -> Recogniser | None:
        """The stored module a task's module name selects, or None (the general engine)."""
        with self._lock:
            if self._monotonic() - self._checked >= self.poll_s:
                self._refresh_locked()
            found = self._engines.get(module)
        return found[1] if found else None

    def read(self, image: bytes, spec: ImageSpec) -> Reading:
        engine = self.engine_for(spec.module)
        return (engine or self.general).read(image, spec)


def with_modules(general: Recogniser, modules_dir: str, poll_s: float) -> ModuleRouter:
    """The recogniser a node runs: ``general`` behind the modules directory's router."""
    return ModuleRouter(general, Library(modules_dir), poll_s)
