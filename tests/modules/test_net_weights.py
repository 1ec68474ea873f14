"""Reading a module network's weights back from its ONNX file, int8 or float32, so
that any module file can be the base of another (``capd module train --base``)."""

from __future__ import annotations

import io

import pytest
import torch

from capd.modules import train
from capd.modules.net import DdddNet, load_onnx_weights

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> tuple[DdddNet, bytes, bytes]:
    """A module network whose every weight is moved off the base's (so a skipped layer
    shows), and its float32 and int8 files as the module export writes them."""
    model, charset, label = train.general_base()
    net = train.base_network(model, charset, list("0123456789"), label)
    torch.manual_seed(3)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.01 * torch.randn_like(p))
    tmp = tmp_path_factory.mktemp("export")
    fp32, int8 = train._export(net.eval(), str(tmp / "f.onnx"), str(tmp / "q.onnx"))
    return net, fp32, int8


def read_back(model: bytes) -> dict[str, torch.Tensor]:
    back = DdddNet(n_classes=11)
    load_onnx_weights(back, io.BytesIO(model))
    return back.state_dict()


def test_float32_file_reads_back_exactly(exported: tuple[DdddNet, bytes, bytes]) -> None:
    net, fp32, _ = exported
    want, got = net.state_dict(), read_back(fp32)
    assert want.keys() == got.keys()
    for name in want:
        assert torch.allclose(want[name], got[name], atol=1e-6), name


def test_int8_file_reads_back_within_one_quantisation_step(
        exported: tuple[DdddNet, bytes, bytes]) -> None:
    net, _, int8 = exported
    want, got = net.state_dict(), read_back(int8)
    for name in want:
        step = float(want[name].max() - want[name].min()) / 255
        assert (want[name] - got[name]).abs().max() <= step + 1e-6, name


def test_a_float32_module_can_be_a_base(exported: tuple[DdddNet, bytes, bytes]) -> None:
    net, fp32, _ = exported
    again = train.base_network(fp32, list("0123456789"), list("13579"), "module m v1")
    assert again.head.out_features == 6
    with torch.no_grad():  # rows copied from the base's: blank, then 1 3 5 7 9
        assert torch.equal(again.head.weight[1], net.head.weight[2])
        assert torch.equal(again.head.weight[5], net.head.weight[10])


def test_a_foreign_file_is_refused() -> None:
    with pytest.raises(train.DataError, match="cannot be trained further"):
        train.base_network(b"not an onnx file", list("01"), list("01"), "module x v1")
