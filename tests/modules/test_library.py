"""Module storage: list / show / remove / export / import through the CLI, versions,
and corrupt or foreign files refused with one line (module files are data: a zip of a
JSON manifest and an ONNX model, checked against the manifest's checksum)."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path

import pytest

from capd.cli import main
from capd.modules.library import Library, ModuleError, pack, unpack


@pytest.fixture
def lib_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CAPD_MODULES_DIR", str(tmp_path / "lib"))
    return tmp_path / "lib"


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main(["module", *args])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_import_then_list_show_export_round_trip(module_file: bytes, tmp_path: Path,
                                                  lib_dir: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    source = tmp_path / "tiny.capdmodule"
    source.write_bytes(module_file)
    code, out, _ = cli(capsys, "import", str(source))
    assert code == 0 and out.startswith("module tiny version 1 imported")
    code, out, _ = cli(capsys, "list")
    assert code == 0
    row = out.splitlines()[1].split()
    assert row[:3] == ["tiny", "1", "24"]
    code, out, _ = cli(capsys, "show", "tiny")
    assert "version      1 (stored: 1)" in out and "24 (19 trained on, 5 held out)" in out
    look = unpack(module_file).manifest.get("second_look")
    vote = unpack(module_file).manifest.get("vote")
    assert ("second look  superseded by the vote" if look and vote else
            f"second look  {look['stretch']:g}x wider" if look else "second look  no") in out
    assert (f"vote         widths {', '.join(f'{s:g}' for s in vote['stretches'])}"
            if vote else "vote         no") in out
    assert f"grey         {unpack(module_file).manifest['grey']}" in out
    assert f"width        {unpack(module_file).manifest['stretch']:g}x the image's" in out
    assert unpack(module_file).manifest["tone"] is True  # training's default
    assert "tone curve   learnt" in out
    manifest = unpack(module_file).manifest
    steps = ", ".join(str(n) for n in manifest.get("member_steps", []))
    assert (f"networks     {manifest['members']}, read together (steps each: {steps})"
            in out) if manifest["members"] > 1 else "networks" not in out
    exported = tmp_path / "out.capdmodule"
    code, out, _ = cli(capsys, "export", "tiny", str(exported))
    assert code == 0
    assert exported.read_bytes() == module_file


def test_import_of_an_existing_name_adds_the_next_version(module_file: bytes, tmp_path: Path,
                                                          lib_dir: Path,
                                                          capsys: pytest.CaptureFixture[str]
                                                          ) -> None:
    source = tmp_path / "tiny.capdmodule"
    source.write_bytes(module_file)
    cli(capsys, "import", str(source))
    code, out, _ = cli(capsys, "import", str(source))
    assert out.startswith("module tiny version 2 imported")
    assert [e.version for e in Library(lib_dir).versions("tiny")] == [1, 2]


def test_remove_deletes_every_version(module_file: bytes, lib_dir: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    Library(lib_dir).save(module_file)
    Library(lib_dir).save(module_file)
    code, out, _ = cli(capsys, "remove", "tiny")
    assert code == 0 and out.strip() == "removed module tiny (2 versions)"
    assert Library(lib_dir).latest() == {}
    assert [p.name for p in lib_dir.iterdir()] == []


def test_show_of_an_unknown_module_is_one_line(lib_dir: Path,
                                               capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = cli(capsys, "show", "nothing")
    assert code == 1
    assert err.strip().splitlines() == [f"capd: error: no module named 'nothing' in {lib_dir}"]


def _refused(tmp_path: Path, data: bytes, capsys: pytest.CaptureFixture[str]) -> str:
    source = tmp_path / "bad.capdmodule"
    source.write_bytes(data)
    code, _, err = cli(capsys, "import", str(source))
    assert code == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1
    return lines[0]


def test_import_refuses_a_truncated_file(module_file: bytes, tmp_path: Path, lib_dir: Path,
                                         capsys: pytest.CaptureFixture[str]) -> None:
    line = _refused(tmp_path, module_file[: len(module_file) // 2], capsys)
    assert "not a capd module (corrupt or not a zip" in line
    assert Library(lib_dir).latest() == {}


def test_import_refuses_a_damaged_model(module_file: bytes, tmp_path: Path, lib_dir: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    with zipfile.ZipFile(io.BytesIO(module_file)) as zf:
        manifest = zf.read("manifest.json")
        model = bytearray(zf.read("model.onnx"))
    model[len(model) // 2] ^= 0xFF
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("manifest.json", manifest)
        zf.writestr("model.onnx", bytes(model))
    line = _refused(tmp_path, buf.getvalue(), capsys)
    assert "checksum mismatch: model.onnx is damaged" in line
    assert Library(lib_dir).latest() == {}


def test_import_refuses_a_foreign_zip(tmp_path: Path, lib_dir: Path,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("model.pkl", b"\x80\x04K\x01.")  # a pickle is never opened
    line = _refused(tmp_path, buf.getvalue(), capsys)
    assert "not a capd module (members ['model.pkl']" in line


def test_import_refuses_a_manifest_of_another_format(tmp_path: Path, lib_dir: Path,
                                                     capsys: pytest.CaptureFixture[str]) -> None:
    data = pack({"name": "x", "charset": ["1"], "input_height": 64}, b"model")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        model = zf.read("model.onnx")
    manifest["format"] = "something-else"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("manifest.json", json.dumps(manifest))
        zf.writestr("model.onnx", model)
    line = _refused(tmp_path, buf.getvalue(), capsys)
    assert "not a capd module (format 'something-else')" in line


def test_a_stored_module_is_written_whole_under_its_version_name(module_file: bytes,
                                                                 lib_dir: Path) -> None:
    entry = Library(lib_dir).save(module_file)
    assert entry.path == lib_dir / "tiny" / "1.capdmodule"
    assert sorted(p.name for p in entry.path.parent.iterdir()) == ["1.capdmodule"]
    assert unpack(entry.path.read_bytes()).name == "tiny"


def test_unpack_refuses_a_name_that_is_not_a_module_name() -> None:
    data = pack({"name": "x", "charset": ["1"], "input_height": 64}, b"model")
    with zipfile.ZipFile(io.BytesIO(data)) as zf:
        manifest = json.loads(zf.read("manifest.json"))
        model = zf.read("model.onnx")
    manifest["name"] = "../../etc"
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("manifest.json", json.dumps(manifest))
        zf.writestr("model.onnx", model)
    with pytest.raises(ModuleError, match="module name '../../etc'"):
        unpack(buf.getvalue())
