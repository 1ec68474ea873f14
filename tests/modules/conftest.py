"""Fixtures for custom modules: a tiny labelled folder and one module trained on it for
a few seconds (once per session), reused by the storage, routing and pick-up tests."""

from __future__ import annotations

import csv
import random
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.helpers import captcha_png

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
