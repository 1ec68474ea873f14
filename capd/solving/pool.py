"""The one door for blocking OCR work: a bounded thread pool sized to the cores.

ONNX Runtime releases the GIL during inference, so threads give real parallelism while
the event loop keeps answering polls.
"""

from __future__ import annotations

import asyncio
import os
from concurrent.futures import ThreadPoolExecutor

from capd.domain.tasks import ImageSpec
from capd.solving.ocr.base import Reading, Recogniser


def default_threads() -> int:
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


class OcrPool:
    def __init__(self, recogniser: Recogniser, threads: int = 0) -> None:
        self.recogniser = recogniser
        self.size = threads or default_threads()
        self._executor = ThreadPoolExecutor(max_workers=self.size, thread_name_prefix="ocr")

    async def read(self, image: bytes, spec: ImageSpec) -> Reading:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self.recogniser.read, image, spec)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
