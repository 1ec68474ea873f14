"""The width a module reads at (manifest ``stretch``): training picks it from the images'
shape and their labels' lengths (crowded text is read wider) or takes it from the
operator, records it, and the engine reads every image that much wider; a malformed
value is refused on load and on the command line."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from capd.cli import main
from capd.domain.tasks import ImageSpec
from capd.modules import engine as module_engine
from capd.modules.engine import ModuleEngine
from capd.modules.library import Library, ModuleError, unpack
from tests.helpers import captcha_png, record_greys
from tests.modules.conftest import TINY_MINUTES, make_dataset, repacked


def _sample(width: int, text: str) -> Any:
    from capd.modules import train

    return train.Sample("x.png", text, b"", np.zeros((64, width), dtype=np.uint8))


@pytest.mark.parametrize(("shapes", "expected"), [
    # Securimage-like: 160 columns (20 frames) for 6 characters -> 5 frames need 1.5x
    ([(160, "abcdef")] * 3, 1.5),
    # 25 frames for 4 characters: already enough, and never read narrower
    ([(200, "abcd")] * 3, 1.0),
    # 8 frames for 8 characters would need 5x: capped
    ([(64, "abcdefgh")] * 3, 2.0),
    # the median image decides, not the most crowded one
    ([(160, "abcdef"), (200, "abcd"), (240, "abcd")], 1.0),
])
def test_auto_stretch_widens_crowded_text_only(shapes: list[tuple[int, str]],
                                               expected: float) -> None:
    from capd.modules import train

    assert train.auto_stretch([_sample(w, t) for w, t in shapes]) == expected


@pytest.mark.parametrize("stretch", ["1.5", True, None, 0.2, 9, [1.5]])
def test_a_malformed_stretch_is_refused(stretch: Any) -> None:
    with pytest.raises(ModuleError, match="manifest stretch must be a number within 0.5-3"):
        unpack(repacked({"stretch": stretch}))


def _widths_read(monkeypatch: pytest.MonkeyPatch, manifest: dict[str, Any],
                 module_file: bytes) -> list[float]:
    """The stretch of every image the engine made for one reading, with this manifest."""
    stretches: list[float] = []
    record_greys(monkeypatch, module_engine, stretches=stretches)
    module = unpack(module_file)
    ModuleEngine(dataclasses.replace(module, manifest=manifest)).read(
        captcha_png("4821"), ImageSpec(numeric=1))
    return stretches


def test_the_engine_reads_at_the_manifests_width(module_file: bytes,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    base = {k: v for k, v in unpack(module_file).manifest.items()
            if k not in ("stretch", "second_look", "vote")}
    assert _widths_read(monkeypatch, base, module_file) == [1.0]  # an older module
    assert _widths_read(monkeypatch, {**base, "stretch": 1.5}, module_file) == [1.5]
    # a second look stretches the module's own width further
    look = {"below": 1.0, "stretch": 1.25}
    assert _widths_read(monkeypatch, {**base, "stretch": 1.5, "second_look": look},
                        module_file) == [1.5, 1.875]


def test_training_records_the_width_it_trained_at(tmp_path: Path) -> None:
    from capd.modules import train

    make_dataset(tmp_path / "data", n=24, seed=3)
    samples = train.read_dataset(tmp_path / "data")
    lines: list[str] = []
    wide = train.train("wide", samples, TINY_MINUTES, lines.append, threads=1, stretch=1.25)
    assert wide.manifest["stretch"] == 1.25
    assert unpack(wide.data).manifest["stretch"] == 1.25
    assert any(line.startswith("reading images 1.25 times wider") for line in lines)
    # by default, the rule's choice for these images
    auto = train.train("auto", samples, TINY_MINUTES, lambda _: None, threads=1)
    assert auto.manifest["stretch"] == train.auto_stretch(train.split(samples)[0])
    with pytest.raises(ValueError, match="stretch must be within 0.5-3"):
        train.train("bad", samples, TINY_MINUTES, lambda _: None, threads=1, stretch=4.0)


@pytest.mark.parametrize("value", ["0.1", "3.5"])
def test_the_cli_refuses_a_stretch_out_of_range(tmp_path: Path, dataset: Callable[..., Path],
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str],
                                                value: str) -> None:
    monkeypatch.setenv("CAPD_MODULES_DIR", str(tmp_path / "lib"))
    code = main(["--db", f"sqlite:///{tmp_path}/capd.db", "module", "train", "shop",
                 "--data", str(dataset()), "--stretch", value])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1
    assert err[0] == "capd: error: --stretch must be within 0.5-3"
    assert Library(tmp_path / "lib").latest() == {}


def test_a_module_read_wider_is_format_2_which_older_readers_refuse() -> None:
    from capd.modules import library

    def format_of(stretch: float | None) -> int:
        extra = {} if stretch is None else {"stretch": stretch}
        data = library.pack({"name": "x", "charset": ["1"], "input_height": 64, **extra},
                            b"model")
        return int(unpack(data).manifest["format_version"])

    # a reader of format 1 would read it at the images' own width: it must not load it
    assert format_of(1.5) == 2
    assert format_of(1.0) == format_of(None) == 1  # readable by every capd
    with pytest.raises(ModuleError, match="module format version 4 is newer than this capd"
                                          r" reads \(3\)"):
        unpack(repacked({"format_version": 4}))
