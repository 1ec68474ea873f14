"""Training's strike-through strokes (``train.strike_lines``) and its moving average of
the weights: strokes are drawn in the image's own dark grey and nowhere else change it,
a share of zero draws none, training with either records what it did, and the CLI
draws strokes unless told --no-lines."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.modules.conftest import TINY_MINUTES, make_dataset

pytestmark = pytest.mark.slow


def _paper_with_ink(n: int = 6, w: int = 160) -> torch.Tensor:
    """White images, each with a block of grey 0.4 ink (5% of it) and a lighter grey."""
    x = torch.ones(n, 1, 64, w)
    x[:, :, 20:44, 10:30] = 0.4  # the darkest 4.7% of the pixels
    x[:, :, 20:44, 60:100] = 0.7
    return x


def test_strokes_are_drawn_in_the_images_own_dark_grey() -> None:
    from capd.modules.train import strike_lines

    x = _paper_with_ink()
    y = strike_lines(x, torch.Generator().manual_seed(1), share=1.0)
    changed = (y - x).abs() > 1e-6
    assert changed.flatten(1).any(dim=1).all()  # every image got a stroke
    # a changed pixel lies between what it was and the ink's grey (a blend at the
    # stroke's edge), never darker than the ink or lighter than it was
    assert (y[changed] >= 0.4 - 1e-6).all()
    assert (y[changed] <= x[changed] + 1e-6).all()
    assert ((y - 0.4).abs() < 1e-6)[changed].float().mean() > 0.3  # mostly full ink
    # a stroke spans the width: most columns of a struck image changed somewhere
    assert changed.any(dim=2).float().mean() > 0.9


def test_no_share_draws_nothing_and_a_seed_draws_the_same() -> None:
    from capd.modules.train import strike_lines

    x = _paper_with_ink(n=40)
    assert torch.equal(strike_lines(x, torch.Generator().manual_seed(2), share=0.0), x)
    a = strike_lines(x, torch.Generator().manual_seed(3), share=0.5)
    b = strike_lines(x, torch.Generator().manual_seed(3), share=0.5)
    assert torch.equal(a, b)
    struck = ((a - x).abs() > 1e-6).flatten(1).any(dim=1)
    assert 10 <= int(struck.sum()) <= 30  # about half of them


def test_training_with_strokes_and_an_average_says_so(tmp_path: Path) -> None:
    from capd.modules import train

    make_dataset(tmp_path / "data", n=24, seed=8)
    samples = train.read_dataset(tmp_path / "data")
    lines: list[str] = []
    outcome = train.train("struck", samples, TINY_MINUTES, lines.append, threads=1,
                          lines=True, average=True)
    assert outcome.manifest["steps"] > 0
    averaged = [line for line in lines if "moving average" in line]
    assert len(averaged) == 1 and ("(kept)" in averaged[0] or "(left out)" in averaged[0])
    assert outcome.manifest["strokes"] is True
    assert outcome.manifest["averaged"] is ("(kept)" in averaged[0])
    quiet: list[str] = []
    plain = train.train("plain", samples, TINY_MINUTES, quiet.append, threads=1, lines=False,
                        average=False)
    assert not any("moving average" in line for line in quiet)
    assert plain.manifest["strokes"] is False and plain.manifest["averaged"] is False


def test_the_cli_draws_strokes_by_default_and_show_says_so(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    from capd.cli import main

    monkeypatch.setenv("CAPD_MODULES_DIR", str(tmp_path / "lib"))
    monkeypatch.setenv("CAPD_OCR_ENGINE", "ddddocr")
    make_dataset(tmp_path / "data", n=24, seed=9)
    assert main(["module", "train", "shop", "--data", str(tmp_path / "data"), "--minutes",
                 str(TINY_MINUTES), "--threads", "1"]) == 0
    assert main(["module", "train", "plain", "--data", str(tmp_path / "data"), "--minutes",
                 str(TINY_MINUTES), "--threads", "1", "--no-lines", "--no-bf16"]) == 0
    capsys.readouterr()
    assert main(["module", "show", "shop"]) == 0
    out = capsys.readouterr().out
    training = [line for line in out.splitlines() if line.startswith("  training ")]
    assert len(training) == 1 and "strike-through strokes drawn" in training[0]
    assert "moving average" not in training[0]
    capsys.readouterr()
    assert main(["module", "show", "plain"]) == 0
    assert "  training " not in capsys.readouterr().out
