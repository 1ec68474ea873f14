"""``capd module ...``: train, list, show, remove, export and import custom modules.

These commands open no database: modules live in the modules directory
(``capd.modules.library``). Errors raise ModuleCliError with the one line to show.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from capd.config import Settings
from capd.constants import MODULE_MIN_SAMPLES, MODULE_TRAIN_MINUTES
from capd.modules.library import (
    LANE_MAX_WIDTH,
    MAX_LANES,
    MAX_MEMBERS,
    MAX_STRETCH,
    MIN_STRETCH,
    Library,
    ModuleError,
    atomic_write,
    check_name,
    default_dir,
)

INSTALL_HINT = ("capd module train needs PyTorch and onnx, which capd does not install by"
                " default: pip install 'capd[modules]'")


class ModuleCliError(Exception):
    """A module command that cannot do what was asked; the message is one line."""


def library_of(settings: Settings) -> Library:
    return Library(settings.modules_dir or default_dir(settings.database_url))


def _iso(ts: Any) -> str:
    if not isinstance(ts, int | float):
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _num(value: Any) -> str:
    return f"{value:.3f}" if isinstance(value, int | float) else "-"


def add_parser(sub: Any, parser_class: type[argparse.ArgumentParser]) -> None:
    """The ``module`` command and its subcommands."""
    mod = sub.add_parser("module", help="custom recognition modules (train, list, export, ...)"
                         ).add_subparsers(dest="sub", required=True, parser_class=parser_class)
    t = mod.add_parser("train", help="train a module from labelled images (DIR/labels.csv)")
    t.add_argument("name")
    t.add_argument("--data", required=True, metavar="DIR",
                   help="folder with labels.csv (file,text) and the images")
    t.add_argument("--unlabelled", metavar="DIR",
                   help="a folder of the scheme's captchas without labels: the module labels"
                        " those it reads surely and trains on them too")
    t.add_argument("--minutes", type=float, default=MODULE_TRAIN_MINUTES,
                   help=f"wall-clock training budget (default {MODULE_TRAIN_MINUTES:g})")
    t.add_argument("--base", metavar="MODULE",
                   help="start from this stored module (default: the general finetuned model)")
    t.add_argument("--threads", type=int, default=0, help="CPU threads (default: all cores)")
    t.add_argument("--grey", choices=("luminance", "darkest"), default=None,
                   help="how colour becomes grey (default: the base's way; darkest makes any"
                        " saturated colour dark ink)")
    t.add_argument("--freeze", choices=("none", "front"), default="none",
                   help="none (default): every layer trains; front: the first layers keep"
                        " the base's weights (each step ~2.5x cheaper, modules less exact)")
    t.add_argument("--stretch", type=float, default=None, metavar="X",
                   help="read images X times wider than their aspect ratio (default: wide"
                        " enough for 5 output frames per label character, at most 2)")
    t.add_argument("--tone", action=argparse.BooleanOptionalAction, default=None,
                   help="learn a grey-level curve in front of the network, which can lighten"
                        " lines drawn in their own grey across the text (default: on; a"
                        " --base module's curve stays with its weights)")
    t.add_argument("--lines", action=argparse.BooleanOptionalAction, default=None,
                   help="draw strike-through strokes in each image's own dark grey over half"
                        " of the training images (default: on)")
    t.add_argument("--average", action=argparse.BooleanOptionalAction, default=None,
                   help="end with a moving average of the weights over the second half of"
                        " training when it reads the held-out images at least as well"
                        " (default: off)")
    t.add_argument("--bf16", action=argparse.BooleanOptionalAction, default=None,
                   help="run training steps in bfloat16, about twice as many steps in the"
                        " budget (default: on where the CPU multiplies bfloat16 matrices in"
                        " hardware, Intel AMX)")
    t.add_argument("--members", type=int, default=None, metavar="N",
                   help="train N networks and read with all of them; a lane trains its"
                        " networks one after the other (default per lane: 2 from --minutes"
                        " 15 on with bfloat16 steps, from 45 on in float32, else 1)")
    t.add_argument("--lanes", type=int, default=None, metavar="N",
                   help="networks that train at the same time, each on its share of the"
                        " threads (default: 2 from 2 threads on, 1 for images wider than"
                        f" {LANE_MAX_WIDTH} pixels at 64 high)")
    t.add_argument("--engine", help="general engine to compare with (default: ocr_engine)")
    t.add_argument("--min-samples", type=int, default=MODULE_MIN_SAMPLES,
                   help=argparse.SUPPRESS)
    mod.add_parser("list", help="stored modules, newest version of each")
    s = mod.add_parser("show", help="one module: versions, samples, accuracy, date")
    s.add_argument("name")
    r = mod.add_parser("remove", help="delete a module (every version)")
    r.add_argument("name")
    e = mod.add_parser("export", help="write a module's newest version to FILE")
    e.add_argument("name")
    e.add_argument("file")
    i = mod.add_parser("import", help="store a module file as its name's next version")
    i.add_argument("file")
    sm = mod.add_parser("samples", help="answers kept as labelled samples of a module")
    sm.add_argument("name")
    sm.add_argument("--export", required=True, metavar="DIR",
                    help="write them as DIR/labels.csv and images (the training format)")


def run(args: argparse.Namespace, settings: Settings) -> None:
    try:
        {"train": cmd_train, "list": cmd_list, "show": cmd_show, "remove": cmd_remove,
         "export": cmd_export, "import": cmd_import,
         "samples": cmd_samples}[args.sub](args, settings)
    except ModuleError as exc:
        raise ModuleCliError(str(exc)) from None


def cmd_train(args: argparse.Namespace, settings: Settings) -> None:
    check_name(args.name)
    if not 0 < args.minutes <= 24 * 60:
        raise ModuleCliError("--minutes must be more than 0 and at most 1440")
    if args.stretch is not None and not MIN_STRETCH <= args.stretch <= MAX_STRETCH:
        raise ModuleCliError(f"--stretch must be within {MIN_STRETCH:g}-{MAX_STRETCH:g}")
    if args.members is not None and not 1 <= args.members <= MAX_MEMBERS:
        raise ModuleCliError(f"--members must be within 1-{MAX_MEMBERS}")
    if args.lanes is not None and not 1 <= args.lanes <= MAX_LANES:
        raise ModuleCliError(f"--lanes must be within 1-{MAX_LANES}")
    try:
        import onnx  # noqa: F401  (read by the loader of the base's weights)

        from capd.modules import train as training
    except ImportError:
        raise ModuleCliError(INSTALL_HINT) from None
    library = library_of(settings)
    base, grey, stretch = None, None, args.stretch
    if args.base:
        entry = library.entry(args.base)
        base_module = library.load(entry)
        base = training.base_from_module(base_module, entry.version)
        # the base's way of reading (grey, width) unless told otherwise: its weights
        # learnt images that way
        grey = str(base_module.manifest.get("grey", "luminance"))
        if stretch is None:
            stretch = float(base_module.manifest.get("stretch", 1.0))
    grey = args.grey or grey

    def progress(line: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {line}", flush=True)

    progress(f"checking {Path(args.data) / 'labels.csv'} and its images")
    try:
        samples = training.read_dataset(args.data, args.min_samples)
        unlabelled = None
        if args.unlabelled:
            if args.freeze != "none":
                raise ModuleCliError("--unlabelled needs every layer training (--freeze none)")
            progress(f"checking the images of {args.unlabelled}")
            unlabelled = training.read_unlabelled(args.unlabelled)
    except training.DataError as exc:
        raise ModuleCliError(str(exc)) from None

    general = None
    engine_name = args.engine or settings.ocr_engine
    from capd.errors import ConfigError
    from capd.solving.ocr import load_recogniser

    try:
        general = (engine_name, load_recogniser(engine_name))
    except ConfigError as exc:
        progress(f"no comparison with the general engine: {exc}")
    try:
        outcome = training.train(args.name, samples, args.minutes, progress, base=base,
                                 general=general, threads=args.threads,
                                 freeze=args.freeze, grey=grey, unlabelled=unlabelled,
                                 stretch=stretch, tone=args.tone, lines=args.lines,
                                 average=args.average, bf16=args.bf16,
                                 members=args.members, lanes=args.lanes)
    except training.DataError as exc:
        raise ModuleCliError(str(exc)) from None
    entry = library.save(outcome.data)
    m = outcome.manifest
    print(f"module {entry.name} version {entry.version} stored in {library.root}"
          f" ({len(outcome.data) / 1e6:.1f} MB, {m['weights']}, peak memory"
          f" {m['peak_memory_mb']} MB)", flush=True)
    general_part = (f"general engine {m['general_engine']} {_num(m['general_accuracy'])}"
                    if "general_accuracy" in m else "general engine not measured")
    print(f"held-out accuracy on {m['held_out']} images: module {entry.name}"
          f" {_num(m['accuracy'])}, {general_part}", flush=True)


def cmd_list(args: argparse.Namespace, settings: Settings) -> None:
    library = library_of(settings)
    latest = library.latest()
    if not latest:
        print(f"no modules in {library.root}")
        return
    print(f"{'name':<24}{'version':>8}{'samples':>9}{'accuracy':>10}{'general':>9}  created")
    for name, entry in latest.items():
        try:
            m = library.load(entry).manifest
        except ModuleError as exc:
            print(f"{name:<24}{entry.version:>8}  unreadable: {exc}")
            continue
        print(f"{name:<24}{entry.version:>8}{m.get('samples', '-'):>9}"
              f"{_num(m.get('accuracy')):>10}{_num(m.get('general_accuracy')):>9}"
              f"  {_iso(m.get('created_at'))}")


def cmd_show(args: argparse.Namespace, settings: Settings) -> None:
    library = library_of(settings)
    entry = library.entry(args.name)
    m = library.load(entry).manifest
    versions = library.versions(args.name)
    print(f"module {entry.name}")
    print(f"  version      {entry.version} (stored: {', '.join(str(v.version) for v in versions)})")
    print(f"  file         {entry.path}")
    print(f"  created      {_iso(m.get('created_at'))}")
    print(f"  samples      {m.get('samples', '-')} ({m.get('train_samples', '-')} trained on,"
          f" {m.get('held_out', '-')} held out)")
    print(f"  accuracy     {_num(m.get('accuracy'))} held-out exact"
          f" (general engine {m.get('general_engine', '-')}: {_num(m.get('general_accuracy'))})")
    print(f"  charset      {''.join(m['charset'])}")
    print(f"  grey         {m.get('grey', 'luminance')}")
    print(f"  width        {m.get('stretch', 1.0):g}x the image's aspect ratio")
    print("  tone curve   " + ("learnt" if m.get("tone") else "none"))
    extras = [what for field, what in (("strokes", "strike-through strokes drawn"),
                                       ("averaged", "ends with the weights' moving average"))
              if m.get(field)]
    if m.get("precision") == "bfloat16":
        extras.append("steps in bfloat16")
    if extras:
        print("  training     " + "; ".join(extras))
    if m.get("unlabelled"):
        print(f"  unlabelled   {m['unlabelled']} images, {m.get('pseudo_labelled', 0)} labelled"
              " by the module and trained on")
    print(f"  weights      {m.get('weights', '-')}, base {m.get('base', '-')},"
          f" {m.get('steps', '-')} steps in {m.get('train_seconds', '-')}s")
    if m.get("members", 1) > 1:
        lanes, first = m.get("lanes", 1), m.get("first_members")
        print(f"  networks     {m['members']}, "
              + (f"1-{first} read first, the rest when these disagree or are unsure"
                 if first else "read together")
              + f" (steps each: {', '.join(str(n) for n in m.get('member_steps', []))})"
              + (f"; trained {lanes} at a time" if lanes > 1 else ""))
    look, vote = m.get("second_look"), m.get("vote")
    print("  second look  " + ("superseded by the vote" if look and vote else
                               f"{look['stretch']:g}x wider below raw confidence"
                               f" {look['below']:g}" if look else "no"))
    print("  vote         " + ("widths " + ", ".join(f"{s:g}" for s in vote["stretches"])
                               + f" below raw confidence {vote['below']:g}"
                               if vote else "no"))
    lengths = m.get("lengths")
    print("  answers      " + (f"{lengths[0]}-{lengths[1]} characters, as in training"
                               if lengths else "any length"))


def cmd_remove(args: argparse.Namespace, settings: Settings) -> None:
    count = library_of(settings).remove(args.name)
    print(f"removed module {args.name} ({count} version{'s' if count != 1 else ''})")


def cmd_export(args: argparse.Namespace, settings: Settings) -> None:
    library = library_of(settings)
    entry = library.entry(args.name)
    data = entry.path.read_bytes()
    library.load(entry)  # never hand on a damaged file
    target = Path(args.file)
    if not target.parent.is_dir():
        raise ModuleCliError(f"{target.parent}: no such directory")
    atomic_write(target, data)
    print(f"module {entry.name} version {entry.version} written to {target}")


def cmd_import(args: argparse.Namespace, settings: Settings) -> None:
    try:
        data = Path(args.file).read_bytes()
    except OSError as exc:
        raise ModuleCliError(f"{args.file}: cannot read ({exc.strerror})") from None
    from capd.modules.library import unpack

    unpack(data, args.file)
    entry = library_of(settings).save(data)
    print(f"module {entry.name} version {entry.version} imported into {entry.path.parent}",
          file=sys.stdout)


def cmd_samples(args: argparse.Namespace, settings: Settings) -> None:
    from capd.domain.tasks import ValidationRules
    from capd.modules.samples import SampleBox

    library = library_of(settings)
    library.entry(args.name)  # an unknown module is an error, not an empty export
    rules = ValidationRules(settings.min_image_bytes, settings.max_image_bytes,
                            settings.min_browser_major, settings.min_safari_major)
    box = SampleBox(library, rules, settings.payload_retention_s, time.time)
    count = box.export(args.name, args.export)
    print(f"{count} sample{'s' if count != 1 else ''} of module {args.name} written to"
          f" {Path(args.export) / 'labels.csv'}")
