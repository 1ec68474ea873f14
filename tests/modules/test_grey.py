"""How a module turns colour grey: the manifest says (luminance or darkest), training
takes its base's way by default so that step 0 sees images as the base learnt them, the
engine reads that way, and a manifest naming another way is refused on load."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import pytest

from capd.domain.tasks import ImageSpec
from capd.modules import engine as module_engine
from capd.modules.engine import ModuleEngine
from capd.modules.library import ModuleError, unpack
from tests.helpers import captcha_png, record_greys
from tests.modules.conftest import TINY_MINUTES, make_dataset, repacked


@pytest.mark.parametrize("grey", ["reddest", 1, None, ["darkest"]])
def test_a_manifest_naming_an_unknown_grey_is_refused(grey: Any) -> None:
    with pytest.raises(ModuleError, match="manifest grey must be one of luminance, darkest"):
        unpack(repacked({"grey": grey}))


@pytest.mark.parametrize("grey", ["luminance", "darkest"])
def test_a_known_grey_loads(grey: str) -> None:
    assert unpack(repacked({"grey": grey})).manifest["grey"] == grey


@pytest.mark.parametrize("grey", [None, "luminance", "darkest"])
def test_the_engine_reads_the_manifests_way(module_file: bytes, grey: str | None,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    module = unpack(module_file)
    manifest = {k: v for k, v in module.manifest.items() if k != "grey"}
    if grey is not None:
        manifest["grey"] = grey
    modes = record_greys(monkeypatch, module_engine)
    ModuleEngine(dataclasses.replace(module, manifest=manifest)).read(
        captcha_png("4821"), ImageSpec(numeric=1))
    assert modes and set(modes) == {grey or "luminance"}


def test_training_takes_the_bases_way(tmp_path: Path, module_file: bytes) -> None:
    from capd.modules import train

    make_dataset(tmp_path / "data", n=24, seed=7)
    samples = train.read_dataset(tmp_path / "data")
    # the default base: the shipped finetuned engine's way, from its metadata
    default = train.train("dflt", samples, TINY_MINUTES, lambda _: None, threads=1)
    assert default.manifest["grey"] == train.general_grey()
    # a module as the base (module_file was trained from the default base)
    base = train.base_from_module(unpack(module_file), 1)
    other = train.train("onbase", samples, TINY_MINUTES, lambda _: None, base=base,
                        threads=1, grey="darkest")
    assert other.manifest["grey"] == "darkest"
    with pytest.raises(ValueError, match="grey must be one of"):
        train.train("bad", samples, TINY_MINUTES, lambda _: None, threads=1, grey="reddest")
