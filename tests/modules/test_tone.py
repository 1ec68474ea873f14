"""A module's learnt grey-level curve (``capd.modules.net.Tone``): it starts as the
identity, can map one grey level far from its neighbours (what a convolution cannot),
travels inside the module's ONNX file in float (int8 files too), comes back when the
file is a base of further training, and training records whether it learnt one."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch

from capd.modules.library import unpack
from capd.modules.net import TONE_KNOTS, DdddNet, Tone, load_onnx_weights
from capd.solving.ocr.onnx_engine import onnx_session
from tests.modules.conftest import TINY_MINUTES, make_dataset

pytestmark = pytest.mark.slow


def test_a_new_curve_is_the_identity_and_clamps() -> None:
    x = torch.rand(2, 1, 64, 40)
    assert torch.allclose(Tone()(x), x, atol=1e-6)
    assert Tone()(torch.tensor([-0.5, 1.5])).tolist() == pytest.approx([0.0, 1.0])


def test_a_curve_can_lighten_one_grey_and_keep_the_darker_and_lighter_ones() -> None:
    tone = Tone(64)
    with torch.no_grad():  # Securimage: lines at grey 112, text at 140, paper at 255
        tone.knots[28:30] = 1.0  # the step holding grey 112
    lines, text, paper = (torch.tensor([g / 255]) for g in (112, 140, 255))
    assert tone(lines).item() == pytest.approx(1.0, abs=0.01)
    assert tone(text).item() == pytest.approx(140 / 255, abs=1e-6)
    assert tone(paper).item() == pytest.approx(1.0, abs=1e-6)


@pytest.fixture(scope="module")
def toned(tmp_path_factory: pytest.TempPathFactory) -> tuple[DdddNet, bytes, bytes]:
    """The general network over the digits with a curve far from the identity, and its
    float32 and int8 files as a module's export writes them."""
    from capd.modules import train

    model, charset, label = train.general_base()
    net = train.base_network(model, charset, list("0123456789"), label)
    net.tone = Tone()
    torch.manual_seed(5)
    with torch.no_grad():  # ink becomes paper and paper ink, give or take
        net.tone.knots.copy_(torch.linspace(1.0, 0.0, 65) + 0.01 * torch.rand(65))
    tmp = tmp_path_factory.mktemp("tone")
    fp32, int8 = train._export(net.eval(), str(tmp / "f.onnx"), str(tmp / "q.onnx"))
    return net, fp32, int8


@pytest.mark.parametrize("which", [1, 2])
def test_the_curve_travels_in_the_file_in_float_and_reads_back(
        toned: tuple[DdddNet, bytes, bytes], which: int) -> None:
    net, model = toned[0], toned[which]
    graph = onnx.load(io.BytesIO(model)).graph
    knots = [t for t in graph.initializer if t.name == TONE_KNOTS]
    assert len(knots) == 1 and knots[0].data_type == onnx.TensorProto.FLOAT  # not int8
    back = DdddNet(n_classes=11)
    load_onnx_weights(back, io.BytesIO(model))  # a base of further training
    assert back.tone is not None
    assert torch.equal(back.tone.knots, net.tone.knots)  # type: ignore[union-attr]


def test_onnx_runtime_applies_the_curve(toned: tuple[DdddNet, bytes, bytes]) -> None:
    net, fp32, _ = toned
    x = torch.rand(1, 1, 64, 96)
    with torch.no_grad():
        want = net(x).numpy()
        without = net(x, tone=False).numpy()
    session = onnx_session(fp32)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    assert np.abs(got - want).max() < 1e-3
    assert np.abs(without - want).max() > 0.5  # the curve changed the reading


def test_training_learns_a_curve_unless_told_not_to(tmp_path: Path) -> None:
    from capd.modules import train

    make_dataset(tmp_path / "data", n=24, seed=4)
    samples = train.read_dataset(tmp_path / "data")
    lines: list[str] = []
    toned = train.train("toned", samples, TINY_MINUTES, lines.append, threads=1)
    assert toned.manifest["tone"] is True and unpack(toned.data).manifest["tone"] is True
    assert any(line.startswith("learnt tone curve") for line in lines)
    plain = train.train("plain", samples, TINY_MINUTES, lambda _: None, threads=1, tone=False)
    assert plain.manifest["tone"] is False
    assert TONE_KNOTS not in {t.name for t in onnx.load(io.BytesIO(
        unpack(plain.data).model)).graph.initializer}
    # a base module's curve stays with its weights, whatever the new training is told
    base = train.base_from_module(unpack(toned.data), 1)
    again = train.train("again", samples, TINY_MINUTES, lambda _: None, threads=1, base=base,
                        tone=False)
    assert again.manifest["tone"] is True


def test_the_cli_trains_without_a_curve_when_told(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    from capd.cli import main
    from capd.modules.library import Library

    monkeypatch.setenv("CAPD_MODULES_DIR", str(tmp_path / "lib"))
    monkeypatch.setenv("CAPD_OCR_ENGINE", "ddddocr")
    make_dataset(tmp_path / "data", n=24, seed=6)
    code = main(["module", "train", "shop", "--data", str(tmp_path / "data"), "--minutes",
                 str(TINY_MINUTES), "--threads", "1", "--no-tone"])
    assert code == 0
    lib = Library(tmp_path / "lib")
    assert lib.load(lib.entry("shop")).manifest["tone"] is False
    capsys.readouterr()
    assert main(["module", "show", "shop"]) == 0
    assert "tone curve   none" in capsys.readouterr().out
