"""Modules of several networks (``members``): trained one after the other, one ONNX
file with an output per network, read with all of them (post.decode_by_members), and
usable as the base of a further module (the first network's weights)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from capd.domain.tasks import ImageSpec
from capd.modules import train
from capd.modules.engine import ModuleEngine
from capd.modules.library import unpack
from capd.modules.net import DdddNet, Ensemble, Tone, load_onnx_weights
from capd.solving.ocr.base import open_image
from capd.solving.ocr.post import decode_by_members, decode_by_vote
from tests.helpers import captcha_png
from tests.modules.conftest import TINY_MINUTES, make_dataset

pytestmark = pytest.mark.slow


def _net(seed: int, classes: int = 11) -> DdddNet:
    torch.manual_seed(seed)
    net = DdddNet(classes)
    net.tone = Tone()
    with torch.no_grad():  # a curve of its own, so the right one can be told apart
        net.tone.knots.copy_(torch.linspace(0.0, 1.0, 65) ** (1.0 + seed / 4))
    return net.eval()


def test_an_ensemble_gives_each_members_logits_in_order() -> None:
    a, b = _net(1), _net(2)
    x = torch.rand(2, 1, 64, 96)
    with torch.no_grad():
        got = Ensemble([a, b])(x)
        assert len(got) == 2
        assert torch.equal(got[0], a(x)) and torch.equal(got[1], b(x))
    assert got[0].shape == (12, 2, 11)


def test_the_first_network_of_an_exported_ensemble_loads_as_a_base(tmp_path: Path) -> None:
    a, b = _net(1), _net(2)
    fp32, int8 = train._export(Ensemble([a, b]), str(tmp_path / "f.onnx"),
                               str(tmp_path / "q.onnx"))
    for data in (fp32, int8):
        loaded = DdddNet(11)
        load_onnx_weights(loaded, io.BytesIO(data))
        assert loaded.tone is not None
        assert torch.allclose(loaded.tone.knots, a.tone.knots)  # (the curve stays float)
        mine, first, second = (dict(n.named_parameters()) for n in (loaded, a, b))
        assert mine.keys() == first.keys()
        for name, value in mine.items():  # every weight is the first network's
            off = (value - first[name]).abs().max()
            apart = (second[name] - first[name]).abs().max()
            assert off <= 0.02 * apart, name
        if data is fp32:
            x = torch.rand(1, 1, 64, 96)
            with torch.no_grad():
                assert torch.allclose(loaded.eval()(x), a(x), atol=1e-5)


def _train_with_unlabelled(tmp_path: Path, name: str, lines: list[str],
                           **options: Any) -> train.Outcome:
    """A module trained on 30 labelled images and 12 unlabelled ones (6 s)."""
    make_dataset(tmp_path / "data", n=30, seed=4)
    make_dataset(tmp_path / "raw", n=12, seed=7)
    (tmp_path / "raw" / "labels.csv").unlink()
    return train.train(name, train.read_dataset(tmp_path / "data"), 2 * TINY_MINUTES,
                       lines.append, unlabelled=train.read_unlabelled(tmp_path / "raw"),
                       **options)


def test_training_two_networks_makes_one_module_of_both(tmp_path: Path) -> None:
    lines: list[str] = []
    outcome = _train_with_unlabelled(tmp_path, "pair", lines, threads=1, members=2)
    manifest = outcome.manifest
    assert manifest["members"] == 2
    assert len(manifest["member_steps"]) == 2 and min(manifest["member_steps"]) >= 1
    assert manifest["steps"] == sum(manifest["member_steps"])
    assert "network 2 of 2" in lines
    assert len([ln for ln in lines if ln.startswith("held-out accuracy after training")]) == 2
    # the second network starts from the first one's labels of the unlabelled images
    assert any(ln.startswith("read the 12 unlabelled images (the networks trained before)")
               for ln in lines)
    module = unpack(outcome.data)
    engine = ModuleEngine(module)
    img = open_image(captcha_png("4821"))
    assert len(engine.member_frames(img)) == 2  # an output per network, the first first
    assert np.array_equal(engine.frames(img), engine.member_frames(img)[0])
    reading = engine.read(captcha_png("4821"), ImageSpec(numeric=1))
    assert len(reading.text) == 4 and 0.0 <= reading.confidence <= 1.0
    # a module of two networks is the base of a further one (its first network)
    base = train.base_from_module(module, 1)
    more = train.train("more", train.read_dataset(tmp_path / "data"), TINY_MINUTES,
                       lambda _: None, threads=1, base=base, members=1)
    assert more.manifest["members"] == 1 and more.manifest["base"] == "module pair v1"


def test_a_longer_budget_trains_two_networks_by_default() -> None:
    assert [train.default_members(m) for m in (0.05, 14.9, 15, 30, 120)] == [1, 1, 2, 2, 2]
    # float32 steps take ~3x as long: two networks only from a longer budget
    assert [train.default_members(m, bf16=False) for m in (15, 44.9, 45, 120)] == [1, 1, 2, 2]


def test_two_threads_train_two_networks_at_a_time_by_default() -> None:
    # (threads, the widest training image at 64 high) -> lanes
    assert [train.default_lanes(t, 240) for t in (1, 2, 8)] == [1, 2, 2]
    # wide images: one lane, so that training stays within the memory of one
    assert train.default_lanes(8, train.LANE_MAX_WIDTH) == 2
    assert train.default_lanes(8, train.LANE_MAX_WIDTH + 1) == 1


def test_two_lanes_train_their_networks_at_the_same_time(tmp_path: Path) -> None:
    lines: list[str] = []
    outcome = _train_with_unlabelled(tmp_path, "lanes", lines, threads=2, members=4,
                                     lanes=2)
    manifest = outcome.manifest
    assert manifest["members"] == 4 and manifest["lanes"] == 2
    assert len(manifest["member_steps"]) == 4 and min(manifest["member_steps"]) >= 1
    # networks 1 and 3 make lane 1, 2 and 4 lane 2; each lane's lines say whose they are
    assert {"network 1 of 4 (lane 1)", "network 3 of 4 (lane 1)", "network 2 of 4 (lane 2)",
            "network 4 of 4 (lane 2)"} <= set(lines)
    for k in range(1, 5):
        assert f"network {k}: held-out accuracy after training" in "\n".join(lines)
    # a lane's second network learns from its first one's labels of the unlabelled images,
    # the first network of a lane from its own only
    taught = [ln for ln in lines if "(the networks trained before)" in ln]
    assert sorted(ln.split(":")[0] for ln in taught) == ["network 3", "network 4"]
    assert len(ModuleEngine(unpack(outcome.data)).member_frames(
        open_image(captcha_png("4821")))) == 4
    # networks 1 and 2 (each lane's first) read first where that loses nothing
    tried = [ln for ln in lines if ln.startswith("held-out accuracy with networks 1-2 reading")]
    assert len(tried) == 1
    assert ("first_members" in manifest) == tried[0].endswith("(kept)")
    assert (unpack(outcome.data).rest != b"") == ("first_members" in manifest)


def test_by_default_each_lane_trains_the_default_networks(tmp_path: Path) -> None:
    make_dataset(tmp_path / "data", n=30, seed=4)
    samples = train.read_dataset(tmp_path / "data")
    two = train.train("two", samples, TINY_MINUTES, lambda _: None, threads=2)
    assert two.manifest["lanes"] == 2
    assert two.manifest["members"] == 2 * train.default_members(TINY_MINUTES)
    one = train.train("one", samples, TINY_MINUTES, lambda _: None, threads=1)
    assert one.manifest["lanes"] == 1
    assert one.manifest["members"] == train.default_members(TINY_MINUTES)


def test_an_error_in_a_lane_stops_training(tmp_path: Path,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    make_dataset(tmp_path / "data", n=30, seed=4)
    made = train.base_network
    calls: list[int] = []

    def base_network(*args: Any) -> DdddNet:
        calls.append(1)
        if len(calls) > 1:  # the first network is made before the lanes start
            raise RuntimeError("lane broke")
        return made(*args)

    monkeypatch.setattr(train, "base_network", base_network)
    lines: list[str] = []
    with pytest.raises(RuntimeError, match="lane broke"):  # (a budget of a minute)
        train.train("broken", train.read_dataset(tmp_path / "data"), 1.0, lines.append,
                    threads=2, members=2, lanes=2)
    # the other lane stopped at its next step rather than train out its minute
    assert "network 1 of 2 (lane 1)" in lines
    assert not any("held-out accuracy after training" in ln for ln in lines)


def test_members_must_be_at_least_one(tmp_path: Path) -> None:
    make_dataset(tmp_path / "data", n=30, seed=4)
    with pytest.raises(ValueError, match="members"):
        train.train("none", train.read_dataset(tmp_path / "data"), TINY_MINUTES,
                    lambda _: None, threads=1, members=0)


def test_a_frozen_front_trains_one_network(tmp_path: Path) -> None:
    make_dataset(tmp_path / "data", n=30, seed=4)
    outcome = train.train("front", train.read_dataset(tmp_path / "data"), TINY_MINUTES,
                          lambda _: None, threads=1, members=2, freeze="front")
    assert outcome.manifest["members"] == 1
    assert np.isfinite(outcome.manifest["accuracy"])


class _Decoder:
    """Decodes the 'frames' (network, width factor) to the reading given for them."""

    def __init__(self, readings: dict[tuple[int, float], tuple[str, tuple[float, ...]]]
                 ) -> None:
        self.readings = readings

    def decode_chars(self, frames: Any, spec: ImageSpec) -> tuple[str, tuple[float, ...]]:
        return self.readings[frames]


def _members(readings: dict[tuple[int, float], tuple[str, tuple[float, ...]]],
             below: float, stretches: list[float]
             ) -> tuple[tuple[str, tuple[float, ...]], list[float]]:
    """decode_by_members over two networks' readings, and the width factors it read at."""
    asked: list[float] = []

    def frames_at(stretch: float) -> list[tuple[int, float]]:
        asked.append(stretch)
        return [(0, stretch), (1, stretch)]

    return decode_by_members(_Decoder(readings), frames_at, ImageSpec(), below,  # type: ignore[arg-type]
                             stretches), asked


def test_networks_that_agree_surely_are_not_read_again() -> None:
    readings = {(0, 1.0): ("ab", (0.99, 0.99)), (1, 1.0): ("ab", (0.97, 0.99))}
    (text, chars), asked = _members(readings, 0.95, [0.8, 1.25])
    # the least sure network's probabilities
    assert (text, chars, asked) == ("ab", (0.97, 0.99), [1.0])


def test_networks_that_disagree_vote_with_every_width() -> None:
    readings = {(0, 1.0): ("ab", (0.99, 0.99)), (1, 1.0): ("ax", (0.99, 0.99)),
                (0, 0.8): ("ax", (0.6, 0.6)), (1, 0.8): ("ax", (0.9, 0.5)),
                (0, 1.25): ("ab", (0.7, 0.7)), (1, 1.25): ("ax", (0.8, 0.8))}
    (text, chars), asked = _members(readings, 0.95, [0.8, 1.25])
    assert asked == [1.0, 0.8, 1.25]
    assert text == "ax"  # four of the six readings, though "ab" was read surer
    assert float(np.prod(chars)) == pytest.approx(0.99 * 0.99 * 4 / 6)


def test_without_widths_the_surer_network_decides_a_tie() -> None:
    readings = {(0, 1.0): ("ab", (0.6, 0.9)), (1, 1.0): ("ax", (0.9, 0.9))}
    (text, chars), asked = _members(readings, 1.0, [])
    assert (text, asked) == ("ax", [1.0])
    assert float(np.prod(chars)) == pytest.approx(0.81 / 2)


def test_one_network_reads_as_the_vote_does() -> None:
    one = {1.0: ("ab", (0.9, 0.6)), 0.9: ("ab", (0.99, 0.99)), 1.1: ("xy", (0.9, 0.8))}
    by_vote = decode_by_vote(_Decoder({(0, s): r for s, r in one.items()}),  # type: ignore[arg-type]
                             lambda s: (0, s), ImageSpec(), 0.95, [0.9, 1.1])
    by_members = decode_by_members(_Decoder({(0, s): r for s, r in one.items()}),  # type: ignore[arg-type]
                                   lambda s: [(0, s)], ImageSpec(), 0.95, [0.9, 1.1])
    assert by_vote == by_members and by_vote[0] == "ab"
