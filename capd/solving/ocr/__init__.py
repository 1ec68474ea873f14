"""Recogniser interface, engines, and post-processing (numeric, case, math)."""

from __future__ import annotations

from capd.errors import ConfigError
from capd.solving.ocr.base import Recogniser

ENGINES = ("ddddocr", "capd", "finetuned")


def load_recogniser(name: str) -> Recogniser:
    """The recogniser engine an operator names in Settings.ocr_engine."""
    if name == "ddddocr":
        from capd.solving.ocr.ddddocr_engine import DdddOcrEngine

        return DdddOcrEngine()
    if name == "capd":
        from capd.solving.ocr.capd_engine import CapdEngine

        return CapdEngine()
    if name == "finetuned":
        from capd.solving.ocr.finetuned_engine import FinetunedEngine

        return FinetunedEngine()
    raise ConfigError(f"unknown OCR engine {name!r}; known: {', '.join(ENGINES)}")
