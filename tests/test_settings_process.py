"""Settings are checked before anything starts: ``capd serve`` (and every other command,
since all of them load settings first) with a misspelt task type or a non-finite or
negative number exits non-zero with one ``capd: error:`` line, serving nothing."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import free_port

REPO = Path(__file__).resolve().parents[1]
TIMEOUT_S = 60  # bound on a command that is expected to stop at once


def run_capd(tmp_path: Path, *args: str, **settings: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CAPD_")}
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    env.update(settings)
    return subprocess.run([sys.executable, "-m", "capd", "--db",
                           f"sqlite:///{tmp_path}/capd.db", *args], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=TIMEOUT_S)


@pytest.mark.parametrize(("name", "value"), [
    ("CAPD_PRICES", "RecaptchaV2TaskProxyles=1"),
    ("CAPD_DEADLINES_S", "TurnstileTsk=90"),
    ("CAPD_RESULT_TTL_S", "inf"),
    ("CAPD_BAN_DURATION_S", "nan"),
    ("CAPD_DEFAULT_PRICE_PER_1000", "Infinity"),
    ("CAPD_DEADLINES_S", "TurnstileTask=-1"),
])
@pytest.mark.parametrize("command", [("serve", "--host", "127.0.0.1", "--port", "{port}"),
                                     ("stats",)])
def test_bad_setting_stops_the_command_with_one_line(tmp_path: Path, command: tuple[str, ...],
                                                     name: str, value: str) -> None:
    args = [a.replace("{port}", str(free_port())) for a in command]
    run = run_capd(tmp_path, *args, **{name: value})
    assert run.returncode != 0, run
    assert "Traceback" not in run.stderr and run.stdout == "", run
    lines = run.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        f"capd: error: setting {name[5:].lower()}:"), run
    assert not (tmp_path / "capd.db").exists()  # stopped before touching the database
