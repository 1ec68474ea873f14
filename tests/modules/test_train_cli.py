"""`capd module train`: the CLI contract (progress, the held-out comparison printed
last, a stored module) and every bad input refused in one line with nothing stored."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

from capd.cli import main
from capd.modules.library import Library, pack, unpack
from tests.processes import capd_env

pytestmark = pytest.mark.slow


def run_train(tmp_path: Path, data: Path, *extra: str, **env: str
              ) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "capd", "--db", f"sqlite:///{tmp_path}/capd.db", "module",
         "train", "shop", "--data", str(data), "--minutes", "0.05", "--threads", "1", *extra],
        env=capd_env(CAPD_MODULES_DIR=str(tmp_path / "lib"), CAPD_OCR_ENGINE="ddddocr", **env),
        capture_output=True, text=True, timeout=300)


def test_train_prints_progress_then_held_out_accuracy_beside_general_engine_last(
        tmp_path: Path, dataset: Callable[..., Path]) -> None:
    done = run_train(tmp_path, dataset())
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert any("24 labelled images: 19 to train on, 5 held out;" in line for line in lines)
    assert any("held-out accuracy before training" in line for line in lines)
    assert any(line.startswith("module shop version 1 stored in") for line in lines)
    last = lines[-1]
    assert last.startswith("held-out accuracy on 5 images: module shop ")
    assert "general engine ddddocr " in last
    assert Library(tmp_path / "lib").latest(), done.stdout
    entry = Library(tmp_path / "lib").entry("shop")
    assert entry.version == 1, done.stdout


def test_train_without_torch_says_how_to_install(tmp_path: Path,
                                                  dataset: Callable[..., Path]) -> None:
    blocker = tmp_path / "no_torch"
    (blocker / "torch").mkdir(parents=True)
    (blocker / "torch" / "__init__.py").write_text("raise ImportError('no torch here')\n")
    env = capd_env(CAPD_MODULES_DIR=str(tmp_path / "lib"))
    env["PYTHONPATH"] = f"{blocker}:{env['PYTHONPATH']}"
    done = subprocess.run(
        [sys.executable, "-m", "capd", "module", "train", "shop", "--data", str(dataset())],
        env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1
    assert done.stderr.strip().splitlines() == [
        "capd: error: capd module train needs PyTorch and onnx, which capd does not install"
        " by default: pip install 'capd[modules]'"]


def _train_in_process(tmp_path: Path, data: Path, monkeypatch: pytest.MonkeyPatch,
                      capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    monkeypatch.setenv("CAPD_MODULES_DIR", str(tmp_path / "lib"))
    code = main(["--db", f"sqlite:///{tmp_path}/capd.db", "module", "train", "shop",
                 "--data", str(data), "--minutes", "0.05"])
    err = capsys.readouterr().err
    return code, err


def _assert_refused(tmp_path: Path, code: int, err: str, fragment: str) -> None:
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("capd: error: ") and fragment in lines[0], lines[0]
    assert Library(tmp_path / "lib").latest() == {}


def test_train_refuses_a_folder_without_labels_csv(tmp_path: Path, dataset: Callable[..., Path],
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    data = dataset()
    (data / "labels.csv").unlink()
    code, err = _train_in_process(tmp_path, data, monkeypatch, capsys)
    _assert_refused(tmp_path, code, err, "no labels.csv")


def test_train_refuses_an_unreadable_image(tmp_path: Path, dataset: Callable[..., Path],
                                           monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    data = dataset()
    (data / "img007.png").write_bytes(b"this is not a picture")
    code, err = _train_in_process(tmp_path, data, monkeypatch, capsys)
    _assert_refused(tmp_path, code, err, "'img007.png' is not a readable image")


def test_train_refuses_a_missing_image(tmp_path: Path, dataset: Callable[..., Path],
                                       monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    data = dataset()
    (data / "img003.png").unlink()
    code, err = _train_in_process(tmp_path, data, monkeypatch, capsys)
    _assert_refused(tmp_path, code, err, "cannot read 'img003.png'")


def test_train_refuses_labels_outside_the_alphabet(tmp_path: Path,
                                                   dataset: Callable[..., Path],
                                                   monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    data = dataset()
    labels = data / "labels.csv"
    labels.write_text(labels.read_text().replace("img005.png,", "img005.png,ab#", 1))
    code, err = _train_in_process(tmp_path, data, monkeypatch, capsys)
    _assert_refused(tmp_path, code, err, "characters outside the alphabet ('#'")


def test_train_refuses_too_few_samples(tmp_path: Path, dataset: Callable[..., Path],
                                       monkeypatch: pytest.MonkeyPatch,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _train_in_process(tmp_path, dataset(n=8), monkeypatch, capsys)
    _assert_refused(tmp_path, code, err, "8 labelled images; at least 20 are needed")


def test_train_refuses_a_bad_module_name(tmp_path: Path, dataset: Callable[..., Path],
                                         monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CAPD_MODULES_DIR", str(tmp_path / "lib"))
    code = main(["module", "train", "../evil", "--data", str(dataset())])
    _assert_refused(tmp_path, code, capsys.readouterr().err, "module name '../evil'")


def test_train_from_a_stored_module_as_base(tmp_path: Path, dataset: Callable[..., Path],
                                            module_file: bytes,
                                            monkeypatch: pytest.MonkeyPatch,
                                            capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CAPD_MODULES_DIR", str(tmp_path / "lib"))
    monkeypatch.setenv("CAPD_OCR_ENGINE", "ddddocr")
    # the base reads 1.7 times wider than its images (not what the width rule would pick)
    base = unpack(module_file)
    Library(tmp_path / "lib").save(pack({**base.manifest, "stretch": 1.7}, base.model))
    code = main(["module", "train", "tiny", "--data", str(dataset()), "--minutes", "0.05",
                 "--base", "tiny", "--threads", "1"])
    out = capsys.readouterr().out
    assert code == 0
    assert "base module tiny v1" in out
    lib = Library(tmp_path / "lib")
    assert [e.version for e in lib.versions("tiny")] == [1, 2]
    # a module trained from another takes its way of turning colour grey and its width,
    # unless told
    base_grey = lib.load(lib.versions("tiny")[0]).manifest["grey"]
    second = lib.load(lib.versions("tiny")[1]).manifest
    assert second["grey"] == base_grey and second["stretch"] == 1.7
    other = "luminance" if base_grey == "darkest" else "darkest"
    code = main(["module", "train", "tiny", "--data", str(dataset()), "--minutes", "0.05",
                 "--base", "tiny", "--threads", "1", "--grey", other, "--stretch", "1.2"])
    assert code == 0
    third = lib.load(lib.versions("tiny")[2]).manifest
    assert third["grey"] == other and third["stretch"] == 1.2


def test_train_from_an_unknown_base_is_one_line(tmp_path: Path, dataset: Callable[..., Path],
                                                monkeypatch: pytest.MonkeyPatch,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("CAPD_MODULES_DIR", str(tmp_path / "lib"))
    code = main(["module", "train", "shop", "--data", str(dataset()), "--base", "nothing"])
    _assert_refused(tmp_path, code, capsys.readouterr().err, "no module named 'nothing'")


@pytest.mark.parametrize(("flag", "value", "limits"), [
    ("--members", "0", "1-4"), ("--members", "5", "1-4"),
    ("--lanes", "0", "1-2"), ("--lanes", "3", "1-2")])
def test_train_refuses_networks_out_of_range(tmp_path: Path, dataset: Callable[..., Path],
                                             monkeypatch: pytest.MonkeyPatch,
                                             capsys: pytest.CaptureFixture[str],
                                             flag: str, value: str, limits: str) -> None:
    monkeypatch.setenv("CAPD_MODULES_DIR", str(tmp_path / "lib"))
    code = main(["module", "train", "shop", "--data", str(dataset()), flag, value])
    _assert_refused(tmp_path, code, capsys.readouterr().err, f"{flag} must be within {limits}")
