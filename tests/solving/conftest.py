"""Fixtures shared by the recogniser tests."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import ImageFont


@pytest.fixture(scope="module")
def fonts(tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """One font file, Pillow's bundled Aileron, for the training generators: the same
    on every machine, whatever fonts the system has."""
    font = ImageFont.load_default(size=24)
    path = Path(tmp_path_factory.mktemp("fonts")) / "Aileron-Regular.otf"
    path.write_bytes(font.path.getvalue())  # type: ignore[union-attr]
    return [str(path)]
