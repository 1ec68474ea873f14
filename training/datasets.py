"""The labelled real-captcha folders and their fixed train / held-out split.

Each scheme is a folder holding images and ``labels.csv`` (``file,text``). The folders
are not part of the repository: they are read where they lie, from ``$CAPD_DATASETS``
or a ``shared/datasets`` folder next to the checkout (or next to its parent).

The split rule (shared with the evaluation, do not change it): per scheme, sort the file
names from labels.csv, shuffle them with ``random.Random(20261127)``; the first 80% are
the train split, the last 20% the held-out split, never trained on. Fine-tuning keeps
the last 10% of the train split back as the calibration slice (``finetune_split``).
"""

from __future__ import annotations

import csv
import os
import random

SPLIT_SEED = 20261127
TRAIN_SHARE_NUM, TRAIN_SHARE_DEN = 4, 5  # 80% train, 20% held-out

SCHEMES = (
    "web_amazon_caps",
    "web_securimage_grey",
    "web_swust_caps_colour",
    "web_swust_mixedcase_ci",
    "web_digits_dotted_dark",
    "web_digits_binary",
    "generic_colour_upper",
)
# schemes whose labels do not carry the case drawn in the image (compare ignoring case)
CASE_INSENSITIVE = frozenset({"web_swust_mixedcase_ci"})


def datasets_root() -> str:
    """The folder holding the scheme folders."""
    env = os.environ.get("CAPD_DATASETS")
    if env:
        return env
    repo = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    for up in ("..", os.path.join("..", "..")):
        cand = os.path.normpath(os.path.join(repo, up, "shared", "datasets"))
        if os.path.isdir(cand):
            return cand
    return os.path.normpath(os.path.join(repo, "..", "shared", "datasets"))


def load_labels(scheme: str, root: str | None = None) -> list[tuple[str, str]]:
    """(image path, label) for every row of a scheme's labels.csv, in file-name order."""
    folder = os.path.join(root or datasets_root(), scheme)
    with open(os.path.join(folder, "labels.csv"), newline="", encoding="utf-8") as fh:
        rows = [(r["file"], r["text"]) for r in csv.DictReader(fh)]
    rows.sort()
    return [(os.path.join(folder, name), text) for name, text in rows]


def split(scheme: str, root: str | None = None
          ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(train, held_out) for one scheme by the fixed rule in the module docstring."""
    rows = load_labels(scheme, root)
    labels = dict(rows)
    names = sorted(labels)
    random.Random(SPLIT_SEED).shuffle(names)
    cut = len(names) * TRAIN_SHARE_NUM // TRAIN_SHARE_DEN
    train = [(n, labels[n]) for n in names[:cut]]
    held = [(n, labels[n]) for n in names[cut:]]
    return train, held


def finetune_split(scheme: str, root: str | None = None
                   ) -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(fit, calibration): the train split minus its last 10%, and that last 10%."""
    train, _ = split(scheme, root)
    cut = len(train) * 9 // 10
    return train[:cut], train[cut:]
