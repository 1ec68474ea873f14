"""bench_core --real: the throughput and latency phases read held-out real captchas (the
split training/datasets.py fixes) instead of drawn ones."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from PIL import Image

from bench.bench_core import BenchError, parse_args, real_captchas
from training import datasets


def _png(shade: int) -> bytes:
    out = io.BytesIO()
    Image.new("L", (40, 20), shade).save(out, "PNG")
    return out.getvalue()


def test_real_captchas_are_the_held_out_images_with_their_labels(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CAPD_DATASETS", str(tmp_path))
    for k, scheme in enumerate(datasets.SCHEMES):
        folder = tmp_path / scheme
        folder.mkdir()
        rows = ["file,text"]
        for i in range(10):
            (folder / f"{i}.png").write_bytes(_png(k * 10 + i))
            rows.append(f"{i}.png,{scheme[:3]}{i}")
        (folder / "labels.csv").write_text("\n".join(rows) + "\n")
    got = real_captchas(2)
    assert len(got) == 2 * len(datasets.SCHEMES)
    for scheme_no, scheme in enumerate(datasets.SCHEMES):
        held = datasets.split(scheme)[1][:2]
        mine = got[2 * scheme_no: 2 * scheme_no + 2]
        # the held-out split's first images, in its order, with their labels and bytes
        assert [c.text for c in mine] == [label for _, label in held]
        assert [c.png for c in mine] == [Path(path).read_bytes() for path, _ in held]
        train = {label for _, label in datasets.split(scheme)[0]}
        assert not train & {c.text for c in mine}


def test_real_captchas_need_the_labelled_folders(tmp_path, monkeypatch) -> None:
    monkeypatch.setenv("CAPD_DATASETS", str(tmp_path / "nowhere"))
    with pytest.raises(BenchError, match="no labelled captchas"):
        real_captchas(1)
    with pytest.raises(SystemExit):
        parse_args(["--real", "-1"])
    assert parse_args(["--real", "3"]).real == 3
