"""Which layers module training changes: by default (``freeze="none"``) every layer
trains; with ``freeze="front"`` the stem and first stages keep the base's weights."""

from __future__ import annotations

import io
from collections.abc import Callable
from pathlib import Path

import onnx
import pytest
import torch
from onnx import numpy_helper

from capd.modules import train
from capd.modules.library import unpack
from capd.modules.net import DdddNet, load_onnx_weights
from tests.modules.conftest import TINY_MINUTES

pytestmark = pytest.mark.slow


def stem_of(model: bytes, charset: list[str]) -> torch.Tensor:
    """The first convolution's weights of a module file: int8 (dequantised) or, where
    the export kept float32 because int8 read worse on the held-out part, as stored.
    (An untrained stem is the base's dequantised weights either way.)"""
    graph = onnx.load_from_string(model).graph
    first = next(n for n in graph.node if n.op_type in ("Conv", "ConvInteger"))
    if first.op_type == "Conv":
        init = {t.name: t for t in graph.initializer}
        return torch.from_numpy(numpy_helper.to_array(init[first.input[1]]).copy())
    net = DdddNet(n_classes=len(charset) + 1)
    load_onnx_weights(net, io.BytesIO(model))
    return net.stem.weight.detach().clone()


def base_stem() -> torch.Tensor:
    model, charset, _ = train.general_base()
    return stem_of(model, charset)


def test_default_training_trains_the_stem_too(dataset: Callable[..., Path]) -> None:
    outcome = train.train("every", train.read_dataset(dataset()), TINY_MINUTES,
                          lambda _: None, threads=1, keep_best=False)
    module = unpack(outcome.data)
    assert module.manifest["freeze"] == "none"
    assert module.manifest["steps"] > 0
    assert module.manifest["strokes"] is True  # drawn by default
    assert not torch.equal(stem_of(module.model, module.charset), base_stem())


def test_freeze_front_keeps_the_base_stem(dataset: Callable[..., Path]) -> None:
    outcome = train.train("front", train.read_dataset(dataset()), TINY_MINUTES,
                          lambda _: None, threads=1, keep_best=False, freeze="front")
    module = unpack(outcome.data)
    assert module.manifest["freeze"] == "front"
    assert module.manifest["strokes"] is False  # strokes need pixels, not cached features
    assert torch.equal(stem_of(module.model, module.charset), base_stem())


def test_unknown_freeze_is_refused(dataset: Callable[..., Path]) -> None:
    with pytest.raises(ValueError, match="freeze"):
        train.train("x", train.read_dataset(dataset()), TINY_MINUTES, lambda _: None,
                    freeze="half")
