"""How training/finetune.py moves its images to another machine and feeds a GPU: the
data pack (one .npz, no pickled objects) round trip, the batch drawer the training
process and its DataLoader workers share, and a tiny run from a pack that saves its
weights alone."""

from __future__ import annotations

import random
import sys

import numpy as np
import pytest

torch = pytest.importorskip("torch")
finetune = pytest.importorskip("training.finetune")
from training import datasets  # noqa: E402


def grey(width: int, value: int) -> np.ndarray:
    img = np.full((64, width), 255, dtype=np.uint8)
    img[20:44, 8:width - 8] = value
    return img


def tiny_groups() -> dict[str, list[tuple[np.ndarray, str]]]:
    groups: dict[str, list[tuple[np.ndarray, str]]] = {}
    for k, scheme in enumerate(datasets.SCHEMES):
        groups[f"fit/{scheme}"] = [(grey(96 + 8 * k, 10), "ab12"), (grey(130, 60), "Zx9")]
        groups[f"val/{scheme}"] = [(grey(100, 30), "q7")]
    groups["synth"] = [(grey(128, 90), "k7Pm3")]
    groups["imitate/generic"] = [(grey(250, 120), "7W4M6G8A")]
    return groups


def test_pack_round_trip_keeps_pixels_labels_and_widths(tmp_path) -> None:
    groups = {**tiny_groups(), "imitate/empty": []}
    path = tmp_path / "pack.npz"
    finetune.write_pack(str(path), groups, "darkest", crop=True)
    back, grey, crop = finetune.read_pack(str(path))
    assert grey == "darkest" and crop is True and sorted(back) == sorted(groups)
    for key, items in groups.items():
        assert [label for _, label in back[key]] == [label for _, label in items]
        for (a, _), (b, _) in zip(items, back[key], strict=True):
            assert a.shape == b.shape and np.array_equal(a, b)
    # plain arrays only: loading never needs pickle
    with np.load(path, allow_pickle=False) as raw:
        assert all(raw[k].dtype != object for k in raw.files)


def test_draw_batch_shapes_frames_and_pools() -> None:
    pools = {k.split("/", 1)[1] if k.startswith("fit/") else k: v
             for k, v in tiny_groups().items() if not k.startswith("val/")}
    weights = dict.fromkeys(datasets.SCHEMES, 1.0)
    rng, gen = random.Random(1), torch.Generator().manual_seed(1)
    name, x, frames, labels = finetune.draw_batch(rng, gen, pools, weights, 5, 1.0, 0.0)
    assert name == "synth" and labels == ["k7Pm3"] * 5
    assert x.shape[:3] == (5, 1, 64) and x.shape[3] % 8 == 0
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0
    # each image's own frame count, one per 8 columns of its jittered width
    assert all(1 <= f <= x.shape[3] // 8 for f in frames) and max(frames) == x.shape[3] // 8
    name, _, _, labels = finetune.draw_batch(rng, gen, pools, weights, 3, 0.0, 1.0)
    assert name == "imitate/generic" and labels == ["7W4M6G8A"] * 3
    only = {**weights, "generic_colour_upper": 1.0}
    only.update({s: 0.0 for s in datasets.SCHEMES if s != "generic_colour_upper"})
    name, _, _, _ = finetune.draw_batch(rng, gen, pools, only, 2, 0.0, 0.0)
    assert name == "generic_colour_upper"


def test_batch_stream_is_seeded() -> None:
    pools = {k.split("/", 1)[1]: v for k, v in tiny_groups().items() if k.startswith("fit/")}
    weights = dict.fromkeys(datasets.SCHEMES, 1.0)

    def first(seed: int):
        stream = iter(finetune.BatchStream(pools, weights, 4, 0.0, 0.0, seed))
        return [next(stream) for _ in range(3)]

    a, b, c = first(7), first(7), first(8)
    assert [n for n, *_ in a] == [n for n, *_ in b]
    assert all(torch.equal(x1, x2) for (_, x1, _, _), (_, x2, _, _) in zip(a, b, strict=True))
    assert any(not torch.equal(x1, x2) or n1 != n2
               for (n1, x1, _, _), (n2, x2, _, _) in zip(a, c, strict=True))


def run_main(monkeypatch: pytest.MonkeyPatch, *argv: str) -> None:
    monkeypatch.setattr(sys, "argv", ["finetune", *argv])
    finetune.main()


@pytest.mark.parametrize("crop", [False, True])
def test_tiny_run_from_a_pack_saves_its_weights(tmp_path, monkeypatch, capsys,
                                                crop: bool) -> None:
    pytest.importorskip("ddddocr")
    pack = tmp_path / "pack.npz"
    finetune.write_pack(str(pack), tiny_groups(), crop=crop)
    weights = tmp_path / "w.pt"
    run_main(monkeypatch, "--pack", str(pack), "--freeze", "none", "--workers", "1",
             "--batch", "2", "--budget-min", "0.02", "--val-per-scheme", "1",
             "--synth", "1", "--imitate", "1", "--imitate-kinds", "generic",
             "--out", str(tmp_path / "ck.pt"), "--weights-out", str(weights),
             *(["--crop"] if crop else []))
    out = capsys.readouterr().out
    assert "7 schemes, 1 synthetic, 1 imitations" in out and "DONE step" in out
    saved = torch.load(weights, map_location="cpu", weights_only=False)
    assert saved["charset"] == finetune.CHARSET and saved["step"] >= 1
    assert saved["grey"] == "luminance" and saved["crop"] is crop
    # the export records how the model reads, for the engine (finetuned.json)
    import warnings

    from training.export_finetuned import export_float

    with warnings.catch_warnings():  # the exporter's own notes (TorchScript exporter, LSTM)
        warnings.simplefilter("ignore")
        meta = export_float(str(weights), str(tmp_path / "w.onnx"))
    assert meta["grey"] == "luminance" and meta["crop"] is crop
    assert all(v.dtype == torch.float16 for v in saved["model"].values()
               if v.is_floating_point())
    # the weights alone start a new run (--init)
    net = finetune.build_model(str(weights))
    assert net.head.out_features == finetune.N_CLASSES


def test_refusals(tmp_path, monkeypatch) -> None:
    pack = tmp_path / "pack.npz"
    finetune.write_pack(str(pack), tiny_groups())
    with pytest.raises(SystemExit, match="--imitate-kinds"):
        run_main(monkeypatch, "--pack", str(pack), "--imitate-kinds", "nonesuch")
    # a pack's images were made grey (and cut, or not) one way: training must read them
    # that way
    with pytest.raises(SystemExit, match="holds luminance images uncut: give --grey luminance$"):
        run_main(monkeypatch, "--pack", str(pack), "--grey", "darkest")
    with pytest.raises(SystemExit, match="holds luminance images uncut: give --grey luminance$"):
        run_main(monkeypatch, "--pack", str(pack), "--crop")
    cut = tmp_path / "cut.npz"
    finetune.write_pack(str(cut), tiny_groups(), "darkest", crop=True)
    with pytest.raises(SystemExit, match="cut to their band: give --grey darkest --crop$"):
        run_main(monkeypatch, "--pack", str(cut), "--grey", "darkest")
    pytest.importorskip("ddddocr")
    with pytest.raises(SystemExit, match="--freeze front runs on the CPU"):
        run_main(monkeypatch, "--pack", str(pack), "--workers", "2", "--synth", "1",
                 "--val-per-scheme", "1", "--out", str(tmp_path / "ck.pt"))
