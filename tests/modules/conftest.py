"""Fixtures for custom modules: a tiny labelled folder and one module trained on it for
a few seconds (once per session), reused by the storage, routing and pick-up tests."""

from __future__ import annotations

import csv
import io
import json
import random
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from capd.modules.library import pack
from tests.helpers import captcha_png, free_port
from tests.processes import Processes, capd_cli

# a live `capd serve` for the process tests: ddddocr, one OCR thread, polls not refused
SERVE_SETTINGS = {"CAPD_OCR_ENGINE": "ddddocr", "CAPD_OCR_THREADS": "1",
                  "CAPD_MAX_POLLS_PER_S": "50", "CAPD_IMAGE_DEADLINE_S": "60"}

TINY_MINUTES = 0.05  # 3 s of training: enough to exercise every step, not to learn


def make_dataset(folder: Path, n: int = 24, seed: int = 1) -> dict[str, str]:
    """``n`` digit captchas and their labels.csv in ``folder``: file name -> text."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    labels = {}
    for i in range(n):
        text = "".join(rng.choice("0123456789") for _ in range(4))
        name = f"img{i:03d}.png"
        (folder / name).write_bytes(captcha_png(text))
        labels[name] = text
    with (folder / "labels.csv").open("w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["file", "text"])
        w.writerows(labels.items())
    return labels


def train_tiny(folder: Path, name: str, seed: int) -> tuple[list[str], Any]:
    """A module trained for TINY_MINUTES on 30 digit captchas made in ``folder``: its
    progress lines and the training outcome."""
    from capd.modules import train

    make_dataset(folder, n=30, seed=seed)
    lines: list[str] = []
    outcome = train.train(name, train.read_dataset(folder), TINY_MINUTES, lines.append,
                          threads=1)
    return lines, outcome


def reported(lines: list[str], prefix: str) -> tuple[str, float]:
    """The one progress line that starts with ``prefix``, and the accuracy it reports."""
    said = [line for line in lines if line.startswith(prefix)]
    assert len(said) == 1, lines
    return said[0], float(said[0].split(": ")[1].split()[0])


@pytest.fixture
def dataset(tmp_path: Path) -> Callable[..., Path]:
    def build(n: int = 24, name: str = "data") -> Path:
        folder = tmp_path / name
        make_dataset(folder, n)
        return folder
    return build


@pytest.fixture(scope="session")
def module_file(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """The bytes of a module named ``tiny`` trained for a few seconds on 24 images."""
    from capd.modules import train

    folder = tmp_path_factory.mktemp("tiny") / "data"
    make_dataset(folder)
    outcome = train.train("tiny", train.read_dataset(folder), TINY_MINUTES, lambda _: None,
                          threads=1)
    return outcome.data


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[Processes]:
    procs = Processes(tmp_path)
    yield procs
    procs.stop_all()


@dataclass(frozen=True)
class ModuleServer:
    """A running ``capd serve`` with the ``tiny`` module stored, an account and a worker
    token for ImageToText."""

    db: str
    lib: Path
    url: str
    key: str
    token: str


@pytest.fixture
def module_server(processes: Processes, tmp_path: Path, module_file: bytes
                  ) -> Callable[..., ModuleServer]:
    def start(**env: str) -> ModuleServer:
        db = f"sqlite:///{tmp_path}/capd.db"
        lib = tmp_path / "lib"
        (tmp_path / "tiny.capdmodule").write_bytes(module_file)
        capd_cli(db, "module", "import", str(tmp_path / "tiny.capdmodule"),
                 CAPD_MODULES_DIR=str(lib))
        key = capd_cli(db, "account", "create", "--balance", "5").strip().splitlines()[-1]
        token = capd_cli(db, "worker-token", "create", "--types",
                         "ImageToTextTask").strip().splitlines()[-1]
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = processes.start("serve", ["--db", db, "serve", "--port", str(port)],
                                 CAPD_MODULES_DIR=str(lib), **{**SERVE_SETTINGS, **env})
        processes.wait_healthy(url, server)
        return ModuleServer(db, lib, url, key, token)
    return start


def repacked(manifest_changes: dict[str, Any]) -> bytes:
    """A tiny module file (a placeholder model) whose manifest has these changes."""
    data = pack({"name": "x", "charset": ["1"], "input_height": 64}, b"model")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        model = zf.read("model.onnx")
    manifest.update(manifest_changes)
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("manifest.json", json.dumps(manifest))
        zf.writestr("model.onnx", model)
    return buf.getvalue()
