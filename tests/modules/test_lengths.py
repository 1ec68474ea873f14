"""A module answers in the lengths of its training labels (manifest ``lengths``), within
the task's own bounds; training keeps the rule only when it does not lose on the held-out
images, and a malformed rule is refused on load."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from capd.domain.tasks import ImageSpec
from capd.modules.engine import ModuleEngine, bounded
from capd.modules.library import Module, ModuleError, unpack
from tests.helpers import captcha_png
from tests.modules.conftest import repacked, reported, train_tiny


def _with_lengths(module: Module, lengths: list[int] | None) -> Module:
    manifest = {k: v for k, v in module.manifest.items() if k != "lengths"}
    if lengths is not None:
        manifest["lengths"] = lengths
    return dataclasses.replace(module, manifest=manifest)


def test_answers_have_the_module_s_lengths(module_file: bytes) -> None:
    module = unpack(module_file)
    image, digits = captcha_png("4821"), ImageSpec(numeric=1)
    for lengths in ([6, 6], [2, 3], [5, 7]):
        text = ModuleEngine(_with_lengths(module, lengths)).read(image, digits).text
        assert lengths[0] <= len(text) <= lengths[1] and text.isdigit(), (lengths, text)
    # the task's bounds narrow the module's; bounds that do not overlap: the task's own
    engine = ModuleEngine(_with_lengths(module, [5, 7]))
    assert len(engine.read(image, dataclasses.replace(digits, max_length=5)).text) == 5
    assert len(engine.read(image, dataclasses.replace(digits, min_length=2,
                                                      max_length=2)).text) == 2


def test_bounded_narrows_to_the_overlap() -> None:
    spec = ImageSpec()
    assert (bounded(spec, 4, 6).min_length, bounded(spec, 4, 6).max_length) == (4, 6)
    task = ImageSpec(min_length=5, max_length=9)
    assert (bounded(task, 4, 6).min_length, bounded(task, 4, 6).max_length) == (5, 6)
    assert bounded(ImageSpec(min_length=8), 4, 6) == ImageSpec(min_length=8)


def test_training_keeps_the_lengths_only_when_they_do_not_lose(tmp_path: Path) -> None:
    lines, outcome = train_tiny(tmp_path / "data", "lengths", seed=5)  # labels of 4 digits
    said, bounded_acc = reported(lines, "held-out accuracy with answers of 4-4")
    manifest = outcome.manifest
    if "kept" in said:
        assert manifest["lengths"] == [4, 4]
        assert manifest["accuracy"] == pytest.approx(bounded_acc, abs=1e-3)
    else:
        assert "lengths" not in manifest
        assert manifest["accuracy"] > bounded_acc
    unpack(outcome.data)  # the manifest loads


@pytest.mark.parametrize("lengths", [
    [], [4], "4-6", [0, 4], [5, 4], [1, 65], ["1", 4], [True, 4], [4.0, 6], {"min": 4},
])
def test_malformed_lengths_are_refused(lengths: Any) -> None:
    with pytest.raises(ModuleError, match="lengths is malformed"):
        unpack(repacked({"lengths": lengths}))


def test_well_formed_lengths_load() -> None:
    assert unpack(repacked({"lengths": [4, 8]})).manifest["lengths"] == [4, 8]
