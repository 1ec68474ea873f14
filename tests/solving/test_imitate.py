"""The generators that imitate two hard real schemes for fine-tuning (training/imitate.py):
labels drawn from the scheme's own alphabet and length, the scheme's geometry, ink that
is really there, and the same picture again for the same seed."""

from __future__ import annotations

import random
import re

import numpy as np
import pytest

imitate = pytest.importorskip("training.imitate")


def test_securimage_like_captchas(fonts: list[str]) -> None:
    rng = random.Random(5)
    for _ in range(20):
        im, label = imitate.securimage(rng, fonts)
        assert im.size == (200, 80) and im.mode == "RGB"
        assert re.fullmatch(r"[0-9a-hj-npr-z]{6}", label)
        grey = np.asarray(im.convert("L"))
        # white paper, grey ink (never black), and a fair amount of it
        assert grey.max() == 255 and grey.min() >= 40
        assert 0.05 < (grey < 200).mean() < 0.6


def test_generic_like_captchas(fonts: list[str]) -> None:
    rng = random.Random(6)
    lengths = set()
    for _ in range(40):
        im, label = imitate.generic(rng, fonts)
        assert im.size[1] == 80 and im.size[0] >= 120
        assert re.fullmatch(r"[0-9A-Z]{4,8}", label)
        lengths.add(len(label))
        rgb = np.asarray(im).astype(int)
        coloured = (rgb.max(axis=2) - rgb.min(axis=2)) > 40
        assert coloured.any()  # characters come in colour
    assert len(lengths) >= 4


@pytest.mark.parametrize("name", sorted(imitate.GENERATORS))
def test_same_seed_same_picture(fonts: list[str], name: str) -> None:
    make = imitate.GENERATORS[name]

    def draw(seed: int) -> tuple[np.ndarray, str]:
        im, label = make(random.Random(seed), fonts)
        return np.asarray(im), label

    first, second, other = draw(3), draw(3), draw(4)
    assert first[1] == second[1] and np.array_equal(first[0], second[0])
    assert first[1] != other[1]


def test_the_schemes_imitated_are_the_labelled_ones() -> None:
    datasets = pytest.importorskip("training.datasets")
    assert set(imitate.SCHEMES) <= set(datasets.SCHEMES)
    assert set(imitate.SCHEMES.values()) == set(imitate.GENERATORS)
