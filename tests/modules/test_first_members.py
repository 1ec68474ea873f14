"""A module of several networks that reads with its first ones before the others
(manifest ``first_members``, the later networks in ``rest.onnx``): the later networks run
only when the first ones disagree or are unsure, the file format carries and checks both
models, and `capd module show` says so."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from capd.cli import main
from capd.domain.tasks import ImageSpec
from capd.modules import train
from capd.modules.engine import ModuleEngine
from capd.modules.library import Module, ModuleError, pack, unpack
from capd.modules.net import DdddNet, Ensemble
from capd.solving.ocr.base import open_image
from tests.helpers import captcha_png

pytestmark = pytest.mark.slow

DIGITS = list("0123456789")


@pytest.fixture(scope="module")
def four(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """One ONNX file of four small networks over the digits; networks 1 and 2 are all
    but the same (weights 1e-5 apart, so that the export keeps both), 3 and 4 others."""
    nets = []
    for seed in (1, 1, 2, 3):
        torch.manual_seed(seed)
        nets.append(DdddNet(len(DIGITS) + 1).eval())
    with torch.no_grad():
        for weight in nets[1].parameters():
            weight.add_(1e-5)
    tmp = tmp_path_factory.mktemp("four")
    fp32, _ = train._export(Ensemble(nets), str(tmp / "f.onnx"), str(tmp / "q.onnx"))
    return fp32


def _manifest(below: float, **more: Any) -> dict[str, Any]:
    return {"name": "four", "charset": DIGITS, "input_height": 64, "members": 4,
            "vote": {"below": below, "stretches": [0.8, 1.25]}, **more}


class _Counted:
    """An ONNX Runtime session that counts its runs."""

    def __init__(self, session: Any) -> None:
        self.session, self.runs = session, 0

    def get_inputs(self) -> Any:
        return self.session.get_inputs()

    def run(self, *args: Any) -> Any:
        self.runs += 1
        return self.session.run(*args)


def _engine(module: Module) -> tuple[ModuleEngine, list[_Counted]]:
    engine = ModuleEngine(module)
    counted = [_Counted(s) for s in engine._sessions]
    engine._sessions = counted  # type: ignore[assignment]
    return engine, counted


def test_the_split_graphs_give_every_network_s_frames_in_order(four: bytes) -> None:
    head, rest = train.split_members(four, 2)
    whole = ModuleEngine(Module(_manifest(0.95), four))
    split = ModuleEngine(Module(_manifest(0.95, first_members=2), head, rest))
    img = open_image(captcha_png("4821"))
    for stretch in (1.0, 1.25):
        a, b = whole.member_frames(img, stretch), split.member_frames(img, stretch)
        assert len(a) == len(b) == 4
        for x, y in zip(a, b, strict=True):
            assert np.allclose(x, y, atol=1e-6)
    assert np.array_equal(split.frames(img), split.member_frames(img)[0])
    # networks 1 and 2 are all but the same, 3 differs
    assert np.allclose(b[0], b[1], atol=1e-3) and not np.allclose(b[0], b[2], atol=1e-3)


def test_first_networks_that_agree_surely_answer_alone(four: bytes) -> None:
    head, rest = train.split_members(four, 2)
    engine, (first, later) = _engine(Module(_manifest(0.0, first_members=2), head, rest))
    reading = engine.read(captcha_png("4821"), ImageSpec(numeric=1))
    # networks 1 and 2 (all but the same) agree, and any reading is sure enough at 0.0
    assert (first.runs, later.runs) == (1, 0)
    img = open_image(captcha_png("4821"))
    text, _ = engine._decoder.decode_chars(engine.frames(img), ImageSpec(numeric=1))
    assert reading.text == text


def test_unsure_first_networks_read_on_with_every_network(four: bytes) -> None:
    head, rest = train.split_members(four, 2)
    # nothing is sure enough at 1.0: every network reads at 1.0 and at both widths
    engine, (first, later) = _engine(Module(_manifest(1.0, first_members=2), head, rest))
    whole, (alone,) = _engine(Module(_manifest(1.0), four))
    for text in ("4821", "90317"):
        spec = ImageSpec(numeric=1)
        assert engine.read(captcha_png(text), spec) == whole.read(captcha_png(text), spec)
    assert (first.runs, later.runs, alone.runs) == (6, 6, 6)


def test_a_file_of_two_models_round_trips_and_is_checked(four: bytes) -> None:
    head, rest = train.split_members(four, 2)
    data = pack(_manifest(0.95, first_members=2), head, rest)
    module = unpack(data)
    assert (module.model, module.rest) == (head, rest)
    assert module.manifest["format_version"] == 3  # a capd reading format 2 refuses it
    assert unpack(pack(_manifest(0.95), four)).rest == b""

    def rewritten(change: Any) -> bytes:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            members = {name: zf.read(name) for name in zf.namelist()}
        change(members)
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as zf:
            for name, content in members.items():
                zf.writestr(name, content)
        return buf.getvalue()

    def damage(members: dict[str, bytes]) -> None:
        rest = bytearray(members["rest.onnx"])
        rest[len(rest) // 2] ^= 0xFF
        members["rest.onnx"] = bytes(rest)

    def drop_rest(members: dict[str, bytes]) -> None:
        del members["rest.onnx"]

    def manifest(**changes: Any) -> Any:
        def change(members: dict[str, bytes]) -> None:
            members["manifest.json"] = json.dumps(
                {**json.loads(members["manifest.json"]), **changes}).encode()
        return change

    for change, says in ((damage, "checksum mismatch: rest.onnx is damaged"),
                         (drop_rest, "manifest first_members and rest.onnx go together"),
                         (manifest(first_members=0), "first_members must be a whole number"),
                         (manifest(first_members="2"), "first_members must be a whole number"),
                         (manifest(first_members=3), "first_members says 3")):
        with pytest.raises(ModuleError, match=says):
            ModuleEngine(unpack(rewritten(change)))
    for module in (Module(_manifest(0.95, first_members=2), four),  # no rest
                   Module(_manifest(0.95), head, rest)):  # no first_members
        with pytest.raises(ModuleError, match="first_members says"):
            ModuleEngine(module)
    with pytest.raises(ValueError):
        pack(_manifest(0.95, first_members=2), four)  # no rest
    with pytest.raises(ValueError):
        pack(_manifest(0.95), head, rest)  # no first_members


def test_show_says_which_networks_read_first(four: bytes, tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CAPD_MODULES_DIR", str(tmp_path / "lib"))
    head, rest = train.split_members(four, 2)
    source = tmp_path / "four.capdmodule"
    source.write_bytes(pack(_manifest(0.95, first_members=2, member_steps=[5, 6, 7, 8],
                                      lanes=2), head, rest))
    assert main(["module", "import", str(source)]) == 0
    assert main(["module", "show", "four"]) == 0
    out = capsys.readouterr().out
    assert ("networks     4, 1-2 read first, the rest when these disagree or are unsure"
            " (steps each: 5, 6, 7, 8); trained 2 at a time") in out
