"""Every seed, the font split and the training schedule in one place.

Fonts come from Debian font packages (see training/README.md for the apt-get line).
Families are split by construction: a family listed under TRAIN is never rendered
for the calibration or test sets, and CALIB / TEST families are never trained on.
"""

from __future__ import annotations

import glob
import os

FONT_ROOTS = ("/usr/share/fonts", "/usr/share/texmf/fonts/opentype")

# family name patterns (matched against the font file name, case-insensitive)
TRAIN_FAMILIES = (
    "DejaVu", "Liberation", "Free", "Nimbus", "URWBookman", "URWGothic", "C059", "P052",
    "Roboto", "texgyre", "Cabin", "Hack-", "Cousine", "Tinos", "Arimo",
)
CALIB_FAMILIES = ("Cantarell", "Caladea", "LinLibertine", "FiraCode")
TEST_FAMILIES = ("Lato", "Carlito", "OpenSans", "ComicNeue", "Inconsolata", "NotoMono",
                 "DancingScript")

SEEDS = {
    "train": 20261126,      # training sample stream (worker seeds derive from it)
    "torch": 1234,          # model init + shuffling
    "calib": 777_000,       # calibration set (isotonic confidence map)
    "test": 999_000,        # held-out evaluation sets
    "unit_test": 4242,      # the CI regression set in tests/solving/test_capd_engine.py
}

# input geometry shared by training and the engine (capd/solving/ocr/capd_engine.py)
HEIGHT = 32
WIDTH = 128

DEFAULT_BUDGET_MIN = 55.0
BATCH = 64
LR = 2e-3
WEIGHT_DECAY = 1e-2

CHECKPOINT = "training/out/model.pt"
ONNX_OUT = "capd/solving/ocr/models/capd_crnn.onnx"
CHARSET_OUT = "capd/solving/ocr/models/charset.json"
CALIB_OUT = "capd/solving/ocr/models/calibration.json"


def _all_font_files() -> list[str]:
    files: list[str] = []
    for root in FONT_ROOTS:
        for ext in ("ttf", "otf"):
            files += glob.glob(os.path.join(root, "**", f"*.{ext}"), recursive=True)
    return sorted(set(files))


def _skip(path: str) -> bool:
    name = os.path.basename(path).lower()
    # symbol / dingbat fonts draw no Latin letters; hairline weights vanish at 32 px
    return any(s in name for s in ("dingbat", "symbol", "d050000l", "standardsymbols",
                                   "thin", "hairline", "extralight", "math"))


def fonts_for(split: str) -> list[str]:
    """Font files of one split: 'train', 'calib' or 'test'."""
    patterns = {"train": TRAIN_FAMILIES, "calib": CALIB_FAMILIES, "test": TEST_FAMILIES}[split]
    others = [p for s, ps in (("train", TRAIN_FAMILIES), ("calib", CALIB_FAMILIES),
                              ("test", TEST_FAMILIES)) if s != split for p in ps]
    out = []
    for f in _all_font_files():
        name = os.path.basename(f).lower()
        if _skip(f):
            continue
        if any(p.lower() in name for p in patterns) and not any(
                p.lower() in name for p in others):
            out.append(f)
    return out
