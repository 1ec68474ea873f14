"""The newcomer's path: ``./run`` installs what each entry point needs, and the README's
quick start solves the sample captcha shipped in examples/."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from capd.domain.tasks import ImageSpec
from capd.solving.ocr.base import Recogniser

REPO = Path(__file__).resolve().parents[1]
SAMPLE = REPO / "examples" / "sample.png"
SAMPLE_TEXT = "7kx3p"


def test_sample_image_reads_as_the_readme_says(engine: Recogniser) -> None:
    assert engine.read(SAMPLE.read_bytes(), ImageSpec()).text == SAMPLE_TEXT
    readme = (REPO / "README.md").read_text()
    assert "examples/sample.png" in readme and f'"text":"{SAMPLE_TEXT}"' in readme


def test_sample_image_fits_the_image_limits() -> None:
    from capd import constants as C

    assert C.MIN_IMAGE_BYTES <= SAMPLE.stat().st_size <= C.MAX_IMAGE_BYTES


# -- ./run, with a stand-in virtual environment that records what pip is asked -------------
@pytest.fixture
def checkout(tmp_path: Path) -> Path:
    """A copy of ./run beside a pyproject.toml, a .venv whose python records pip calls and
    whose tools echo, and an initdb on PATH (so no apt-get)."""
    shutil.copy(REPO / "run", tmp_path / "run")
    (tmp_path / "pyproject.toml").write_text("[project]\nname = 'x'\n")
    bin_dir = tmp_path / ".venv" / "bin"
    bin_dir.mkdir(parents=True)
    scripts = {"python": f'echo "$*" >> {tmp_path}/pip.log\n',
               **{tool: f'echo {tool} "$@"\n' for tool in ("capd", "ruff", "mypy", "pytest")}}
    tools = tmp_path / "tools"
    tools.mkdir()
    scripts_at = {bin_dir / name: body for name, body in scripts.items()}
    scripts_at[tools / "initdb"] = ""
    for path, body in scripts_at.items():
        path.write_text("#!/usr/bin/env bash\n" + body)
        path.chmod(0o755)
    return tmp_path


def run(checkout: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PATH": f"{checkout / 'tools'}{os.pathsep}{os.environ['PATH']}"}
    env.pop("CAPD_VENV", None)
    done = subprocess.run([str(checkout / "run"), *args], cwd=checkout, env=env,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return done


def installs(checkout: Path) -> list[str]:
    log = checkout / "pip.log"
    lines = log.read_text().splitlines() if log.exists() else []
    return [line.split()[-1] for line in lines]


def test_serve_installs_capd_alone_and_says_so(checkout: Path) -> None:
    done = run(checkout, "serve", "--port", "9")
    assert installs(checkout) == ["."]
    assert re.search(r"^\./run: installing capd .*\.venv", done.stderr, re.M), done.stderr
    assert done.stdout.strip() == "capd serve --demo --port 9"


def test_test_installs_the_test_extra(checkout: Path) -> None:
    run(checkout, "test", "-q")
    assert installs(checkout) == [".[test]"]


def test_serve_then_test_then_serve_installs_what_is_missing_once(checkout: Path) -> None:
    run(checkout, "serve")
    run(checkout, "test")
    run(checkout, "serve")
    run(checkout, "test")
    assert installs(checkout) == [".", ".[test]"]


def test_test_then_serve_installs_nothing_more(checkout: Path) -> None:
    run(checkout, "test")
    done = run(checkout, "serve")
    assert installs(checkout) == [".[test]"]
    assert "installing" not in done.stderr


def test_a_newer_pyproject_reinstalls_what_was_there(checkout: Path) -> None:
    run(checkout, "test")
    stamp = checkout / ".venv" / ".capd-extras"
    os.utime(stamp, (1_000_000, 1_000_000))  # older than pyproject.toml
    run(checkout, "serve")
    assert installs(checkout) == [".[test]", ".[test]"]
