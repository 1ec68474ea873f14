"""Recogniser interface, engines, and post-processing (numeric, case, math).

Engines are chosen by name (Settings.ocr_engine). Every engine runs an ONNX model with
ONNX Runtime and decodes it with capd's masked CTC decoder (post.py); ``auto`` combines
the others (combined.py).
"""

from __future__ import annotations

from importlib import import_module

from capd.errors import ConfigError
from capd.solving.ocr.base import Recogniser

# name -> (module, class); modules are imported only when the engine is loaded
_REGISTRY: dict[str, tuple[str, str]] = {
    "ddddocr": ("capd.solving.ocr.ddddocr_engine", "DdddOcrEngine"),
    "ddddocr-beta": ("capd.solving.ocr.ddddocr_engine", "DdddOcrBetaEngine"),
    "capd": ("capd.solving.ocr.capd_engine", "CapdEngine"),
    "capd-web": ("capd.solving.ocr.capd_engine", "CapdWebEngine"),
    "rapidocr": ("capd.solving.ocr.rapidocr_engine", "RapidOcrEngine"),
    "finetuned": ("capd.solving.ocr.finetuned_engine", "FinetunedEngine"),
    "auto": ("capd.solving.ocr.combined", "CombinedEngine"),
}
ENGINES = tuple(_REGISTRY)


def load_recogniser(name: str) -> Recogniser:
    """The recogniser engine an operator names in Settings.ocr_engine. Raises ConfigError
    for an unknown name or an engine whose model is not installed."""
    if name not in _REGISTRY:
        raise ConfigError(f"unknown OCR engine {name!r}; known: {', '.join(ENGINES)}")
    module_name, class_name = _REGISTRY[name]
    try:
        cls = getattr(import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"OCR engine {name!r} is not installed: {exc}") from None
    try:
        engine: Recogniser = cls()
    except FileNotFoundError as exc:  # its model file is missing
        raise ConfigError(f"OCR engine {name!r} has no model: {exc}") from None
    return engine
