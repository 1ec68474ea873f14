"""Training steps in bfloat16 (``train(bf16=...)``): chosen by the CPU unless told,
recorded in the manifest, and the module it makes is an ordinary float module; and the
channels-last layout training runs its convolutions in."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest
import torch

from capd.modules import train
from capd.modules.library import unpack
from capd.modules.net import set_channels_last
from tests.modules.conftest import TINY_MINUTES, make_dataset

pytestmark = pytest.mark.slow


def test_the_default_follows_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from capd.modules import train

    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True, raising=False)
    assert train.cpu_has_bf16_matrix() is True
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False, raising=False)
    assert train.cpu_has_bf16_matrix() is False


@pytest.mark.parametrize("bf16", [True, False])
def test_training_records_its_precision_and_exports_float(tmp_path: Path, bf16: bool) -> None:
    from capd.modules import train

    make_dataset(tmp_path / "data", n=24, seed=10)
    lines: list[str] = []
    outcome = train.train("p", train.read_dataset(tmp_path / "data"), TINY_MINUTES,
                          lines.append, threads=1, bf16=bf16)
    assert outcome.manifest["steps"] > 0
    assert outcome.manifest["precision"] == ("bfloat16" if bf16 else "float32")
    assert any("bfloat16" in line for line in lines) is bf16
    graph = onnx.load_from_string(unpack(outcome.data).model).graph
    bf16_type = onnx.TensorProto.BFLOAT16
    assert all(t.data_type != bf16_type for t in graph.initializer)


def test_channels_last_changes_the_layout_not_the_network() -> None:
    model, charset, label = train.general_base()
    net = train.base_network(model, charset, list("0123456789"), label).eval()
    # 3x3 convolutions over several channels: their two layouts differ in memory
    convs = [c for c in net.convs() if c.kernel_size == (3, 3) and c.in_channels > 1]
    x = torch.rand(2, 1, 64, 96)
    weights = {k: v.clone() for k, v in net.state_dict().items()}
    with torch.no_grad():
        before = net(x)
        set_channels_last(net)
        assert all(c.weight.is_contiguous(memory_format=torch.channels_last)
                   and not c.weight.is_contiguous() for c in convs)
        after = net(x)
        set_channels_last(net, on=False)
    assert all(c.weight.is_contiguous() for c in convs)
    assert torch.allclose(before, after, atol=1e-4)
    assert all(torch.equal(weights[k], v) for k, v in net.state_dict().items())
