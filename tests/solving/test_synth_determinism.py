"""The training generator (training/synth.py) is a function of its seed: the evaluation
sets, their cached readings and the CI regression set depend on drawing the same images
again. The `captcha` package draws from the OS's entropy (`secrets`), so its style is the
one that needs care."""

from __future__ import annotations

import random

import numpy as np
import pytest

synth = pytest.importorskip("training.synth")
pytest.importorskip("captcha")


@pytest.mark.parametrize("style", ["imagecaptcha", "mixed", "warp", "math"])
def test_same_seed_same_image(fonts: list[str], style: str) -> None:
    def draw(seed: int) -> tuple[np.ndarray, str]:
        im, label, _ = synth.make_sample(random.Random(seed), style, fonts)
        return np.asarray(im), label

    first, second, other = draw(11), draw(11), draw(12)
    assert first[1] == second[1]
    assert np.array_equal(first[0], second[0])
    assert not (first[1] == other[1] and first[0].shape == other[0].shape
                and np.array_equal(first[0], other[0]))


def test_the_package_is_left_as_it_was(fonts: list[str]) -> None:
    import captcha.image as ic_module

    before = getattr(ic_module, "secrets", None)
    synth.make_sample(random.Random(3), "imagecaptcha", fonts)
    assert getattr(ic_module, "secrets", None) is before
