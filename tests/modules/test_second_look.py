"""A module's second look (as the finetuned engine's): an unsure reading is read again
from a wider image, when the manifest says so; a malformed setting is refused on load."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from capd.domain.tasks import ImageSpec
from capd.modules.engine import ModuleEngine
from capd.modules.library import Module, ModuleError, unpack
from tests.helpers import captcha_png, record_stretches
from tests.modules.conftest import repacked, reported, train_tiny


def _with_look(module: Module, look: Any) -> Module:
    manifest = dict(module.manifest)
    manifest.pop("vote", None)  # (which would supersede it)
    if look is None:
        manifest.pop("second_look", None)
    else:
        manifest["second_look"] = look
    return dataclasses.replace(module, manifest=manifest)


@pytest.mark.parametrize(("look", "expected"), [
    ({"below": 1.0, "stretch": 1.25}, [1.0, 1.25]),   # every reading is unsure
    ({"below": 0.0, "stretch": 1.25}, [1.0]),         # none is
    (None, [1.0]),                                    # no second look in the manifest
])
def test_the_trigger_decides_the_second_reading(module_file: bytes, look: Any,
                                                expected: list[float],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    engine = ModuleEngine(_with_look(unpack(module_file), look))
    calls = record_stretches(monkeypatch, engine, "frames")
    engine.read(captcha_png("4821"), ImageSpec(numeric=1))
    assert calls == expected


def test_training_keeps_the_second_look_and_the_vote_only_when_they_do_not_lose(
        tmp_path: Path) -> None:
    from capd.modules.train import VOTE_BELOW, VOTE_STRETCHES

    lines, outcome = train_tiny(tmp_path / "data", "looks", seed=4)
    said, with_look = reported(lines, "held-out accuracy with a second look")
    said_vote, with_vote = reported(lines, "held-out accuracy with a vote of 6 widths")
    single = float(next(ln for ln in lines if ln.startswith("held-out accuracy float32"))
                   .split("int8 ")[1].split(":")[0])
    manifest = outcome.manifest
    if "kept" in said:
        assert manifest["second_look"]["stretch"] > 1.0
        assert with_look >= single - 1e-3
    else:
        assert "second_look" not in manifest
    best = max(single, with_look) if "kept" in said else single
    if "kept" in said_vote:
        assert manifest["vote"] == {"below": VOTE_BELOW, "stretches": list(VOTE_STRETCHES)}
        assert with_vote >= best - 1e-3
        best = with_vote
    else:
        assert "vote" not in manifest
        assert with_vote < best
    # (the length rule, fitted last, may only raise the accuracy)
    assert manifest["accuracy"] >= best - 1e-3


@pytest.mark.parametrize("look", [
    [], "1.25", {"below": 0.5}, {"below": "0.5", "stretch": 1.25},
    {"below": 1.5, "stretch": 1.25}, {"below": 0.5, "stretch": 1.0},
    {"below": 0.5, "stretch": 9}, {"below": True, "stretch": 1.25},
])
def test_a_malformed_second_look_is_refused(look: Any) -> None:
    with pytest.raises(ModuleError, match="second_look is malformed"):
        unpack(repacked({"second_look": look}))


def test_a_well_formed_second_look_loads() -> None:
    module = unpack(repacked({"second_look": {"below": 0.6, "stretch": 1.25}}))
    assert module.manifest["second_look"]["stretch"] == 1.25
