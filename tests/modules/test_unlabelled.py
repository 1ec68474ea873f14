"""Semi-supervised module training: unlabelled images of the scheme, read by the module as
it trains, become training images when read surely enough (``--unlabelled DIR``)."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch

from capd.cli import main
from capd.modules import train
from capd.modules.library import Library, unpack
from capd.modules.net import set_channels_last
from capd.solving.ocr.base import open_image
from capd.solving.ocr.finetuned_engine import grey64
from tests.modules.conftest import TINY_MINUTES, make_dataset

pytestmark = pytest.mark.slow


def unlabelled_folder(tmp_path: Path, n: int = 12) -> Path:
    """``n`` digit captchas with their labels.csv removed, plus a file that is no image."""
    folder = tmp_path / "raw"
    make_dataset(folder, n, seed=7)
    (folder / "labels.csv").unlink()
    (folder / "notes.txt").write_text("not an image, and not read as one\n")
    return folder


def test_read_unlabelled_takes_the_image_files(tmp_path: Path) -> None:
    images = train.read_unlabelled(unlabelled_folder(tmp_path))
    assert len(images) == 12
    assert all(data.startswith(b"\x89PNG") for data in images)


def test_read_unlabelled_refuses_bad_folders(tmp_path: Path) -> None:
    with pytest.raises(train.DataError, match="not a directory"):
        train.read_unlabelled(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "readme.md").write_text("no captchas here\n")
    with pytest.raises(train.DataError, match="no images"):
        train.read_unlabelled(tmp_path / "empty")
    folder = unlabelled_folder(tmp_path)
    (folder / "broken.png").write_bytes(b"not a picture at all")
    with pytest.raises(train.DataError, match="broken.png: not a readable image"):
        train.read_unlabelled(folder)


def test_greedy_reading_merges_repeats_and_multiplies_peaks() -> None:
    # frames: blank, 1 (0.9), 1 (0.8), blank, 2 (0.7), 2 (0.95), 1 (0.6)
    peaks = [(0, 0.99), (1, 0.9), (1, 0.8), (0, 0.97), (2, 0.7), (2, 0.95), (1, 0.6)]
    probs = torch.zeros(len(peaks), 3)
    for t, (k, p) in enumerate(peaks):
        probs[t] = (1.0 - p) / 2
        probs[t, k] = p
    label, conf = train.greedy_reading(probs)
    assert label == [1, 2, 1]
    assert conf == pytest.approx(0.9 * 0.95 * 0.6)


def test_pseudo_label_keeps_sure_readings_of_a_plausible_length(tmp_path: Path) -> None:
    model, charset, label = train.general_base()
    net = train.base_network(model, charset, list("0123456789"), label)
    greys = [grey64(open_image(d)) for d in
             train.read_unlabelled(unlabelled_folder(tmp_path))]
    everything = train.pseudo_label(net, greys, (1, 99), min_confidence=0.0)
    assert {i for i, _ in everything} <= set(range(len(greys)))
    assert len(everything) >= len(greys) - 2  # the base reads nearly all of them as something
    assert all(len(lab) >= 1 for _, lab in everything)
    assert train.pseudo_label(net, greys, (1, 99), min_confidence=1.01) == []
    assert train.pseudo_label(net, greys, (50, 99), min_confidence=0.0) == []
    # a second, wider view must read the same: itself agrees, a blank page never does
    assert train.pseudo_label(net, greys, (1, 99), 0.0, wide=greys) == everything
    blank = [np.full_like(g, 255) for g in greys]
    assert train.pseudo_label(net, greys, (1, 99), 0.0, wide=blank) == []


def test_training_reads_the_unlabelled_twice_and_records_them(
        tmp_path: Path, dataset: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train, "PSEUDO_MIN_CONFIDENCE", 0.0)  # every plausible reading
    ticks = itertools.count()
    lines: list[str] = []
    seen: list[list[tuple[int, str]]] = []
    outcome = train.train("semi", train.read_dataset(dataset()), TINY_MINUTES, lines.append,
                          threads=1, keep_best=False, clock=lambda: next(ticks) * 0.2,
                          unlabelled=train.read_unlabelled(unlabelled_folder(tmp_path)),
                          on_pseudo=seen.append)
    rounds = [line for line in lines if line.startswith("read the 12 unlabelled images")]
    assert len(rounds) == len(train.PSEUDO_ROUNDS)
    manifest = unpack(outcome.data).manifest
    assert manifest["unlabelled"] == 12
    assert 0 < manifest["pseudo_labelled"] <= 12
    assert len(seen) == len(train.PSEUDO_ROUNDS)
    assert len(seen[-1]) == manifest["pseudo_labelled"]
    assert all(0 <= i < 12 and text.isdigit() for i, text in seen[-1])


def test_labelled_images_given_as_unlabelled_are_left_out(
        tmp_path: Path, dataset: Callable[..., Path], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(train, "PSEUDO_MIN_CONFIDENCE", 0.0)
    samples = train.read_dataset(dataset())
    fresh = train.read_unlabelled(unlabelled_folder(tmp_path))
    ticks = itertools.count()
    lines: list[str] = []
    seen: list[list[tuple[int, str]]] = []
    outcome = train.train("semi", samples, TINY_MINUTES, lines.append, threads=1,
                          keep_best=False, clock=lambda: next(ticks) * 0.2,
                          unlabelled=[s.image for s in samples] + fresh, on_pseudo=seen.append)
    assert "24 of the 36 unlabelled images are labelled images too: left out" in lines
    assert unpack(outcome.data).manifest["unlabelled"] == 12
    assert seen and seen[-1]
    assert all(24 <= i < 36 for i, _ in seen[-1])  # positions in the list given


def test_unlabelled_needs_every_layer_training(dataset: Callable[..., Path],
                                               tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="freeze='none'"):
        train.train("x", train.read_dataset(dataset()), TINY_MINUTES, lambda _: None,
                    freeze="front",
                    unlabelled=train.read_unlabelled(unlabelled_folder(tmp_path)))


def test_cli_trains_with_unlabelled_and_show_says_so(
        tmp_path: Path, dataset: Callable[..., Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CAPD_MODULES_DIR", str(tmp_path / "lib"))
    monkeypatch.setenv("CAPD_OCR_ENGINE", "ddddocr")
    code = main(["module", "train", "shop", "--data", str(dataset()), "--minutes", "0.05",
                 "--threads", "1", "--unlabelled", str(unlabelled_folder(tmp_path))])
    assert code == 0, capsys.readouterr().err
    assert Library(tmp_path / "lib").load(
        Library(tmp_path / "lib").entry("shop")).manifest["unlabelled"] == 12
    capsys.readouterr()
    assert main(["module", "show", "shop"]) == 0
    assert "  unlabelled   12 images, " in capsys.readouterr().out


@pytest.mark.parametrize("extra, fragment", [
    (["--unlabelled", "MISSING"], "not a directory"),
    (["--unlabelled", "RAW", "--freeze", "front"], "--unlabelled needs every layer training"),
])
def test_cli_refuses_bad_unlabelled_in_one_line(
        tmp_path: Path, dataset: Callable[..., Path], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str], extra: list[str], fragment: str) -> None:
    monkeypatch.setenv("CAPD_MODULES_DIR", str(tmp_path / "lib"))
    raw = unlabelled_folder(tmp_path)
    extra = [str(raw) if a == "RAW" else str(tmp_path / "nowhere") if a == "MISSING" else a
             for a in extra]
    code = main(["module", "train", "shop", "--data", str(dataset()), "--minutes", "0.05",
                 *extra])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1
    assert len(err) == 1 and err[0].startswith("capd: error: ") and fragment in err[0], err
    assert Library(tmp_path / "lib").latest() == {}


def test_pseudo_label_agrees_with_earlier_readings_and_reads_in_bfloat16(
        tmp_path: Path) -> None:
    model, charset, label = train.general_base()
    net = train.base_network(model, charset, list("0123456789"), label)
    greys = [grey64(open_image(d)) for d in
             train.read_unlabelled(unlabelled_folder(tmp_path))]
    everything = dict(train.pseudo_label(net, greys, (1, 99), min_confidence=0.0))
    first, second = sorted(everything)[:2]
    # readings of networks read before (a teacher's, kept from an earlier round): only
    # the images read the same way by both stay
    earlier = {first: everything[first], second: [*everything[second], 1]}
    assert train.pseudo_label(net, greys, (1, 99), 0.0, agree_with=earlier) == [
        (first, everything[first])]
    assert train.pseudo_label(net, greys, (1, 99), 0.0, agree_with={}) == []
    # bfloat16 reads the same images (the network's answers, not its exact confidences)
    set_channels_last(net)
    in_bf16 = dict(train.pseudo_label(net, greys, (1, 99), 0.0, bf16=True))
    same = sum(in_bf16.get(i) == lab for i, lab in everything.items())
    assert same >= len(everything) - 2
