"""Training steps in bfloat16 (``train(bf16=...)``): chosen by the CPU unless told,
recorded in the manifest, and the module it makes is an ordinary float module."""

from __future__ import annotations

from pathlib import Path

import onnx
import pytest

from capd.modules.library import unpack
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
