"""``capd worker``: the built-in OCR as a separate process that leases ImageToText work
from a capd server over the worker protocol (spec §7) — how another machine adds OCR
capacity. One long-polling lease loop per OCR thread."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import httpx

from capd.domain.tasks import ValidationRules
from capd.solving.imagetask import image_bytes, image_spec, outcome
from capd.solving.ocr.base import UnreadableImage
from capd.solving.pool import OcrPool

log = logging.getLogger("capd.worker")

IMAGE_TYPE = "ImageToTextTask"
LEASE_WAIT_S = 20
RETRY_S = (0.5, 1, 2, 5)  # backoff while the server cannot be reached


class WorkerStopped(Exception):
    """Raised when the server refuses the worker token: retrying cannot help."""


class RemoteOcrWorker:
    def __init__(self, urls: list[str], token: str, pool: OcrPool, rules: ValidationRules,
                 wait_s: float = LEASE_WAIT_S) -> None:
        if not urls:
            raise ValueError("at least one server URL is needed")
        # several API nodes of one deployment: on a connection failure, try the next
        self.urls = [u.rstrip("/") for u in urls]
        self._current = 0
        self.token = token
        self.pool = pool
        self.rules = rules
        self.wait_s = wait_s
        self.solved = 0
        self.failed = 0

    async def run(self) -> None:
        timeout = httpx.Timeout(self.wait_s + 15, connect=5)
        async with httpx.AsyncClient(timeout=timeout) as client:
            await asyncio.gather(*(self._loop(client) for _ in range(self.pool.size)))

    async def _post(self, client: httpx.AsyncClient, method: str,
                    body: dict[str, Any]) -> dict[str, Any]:
        attempt = 0
        while True:
            url = self.urls[self._current % len(self.urls)]
            try:
                response = await client.post(f"{url}/worker/v1/{method}",
                                             json={"workerToken": self.token, **body})
                answer: dict[str, Any] = response.json()
                if answer.get("errorCode") == "ERROR_WORKER_TOKEN_INVALID":
                    raise WorkerStopped("the server refused the worker token")
                return answer
            except (httpx.HTTPError, ValueError) as exc:
                if isinstance(exc, httpx.TransportError) and url == self.urls[
                        self._current % len(self.urls)]:
                    self._current += 1  # this node is unreachable: fail over to the next
                delay = RETRY_S[min(attempt, len(RETRY_S) - 1)]
                log.warning("worker %s failed (%s); retrying in %s s", method,
                            type(exc).__name__, delay)
                attempt += 1
                await asyncio.sleep(delay)

    async def _loop(self, client: httpx.AsyncClient) -> None:
        while True:
            answer = await self._post(client, "lease", {
                "types": [IMAGE_TYPE], "max": 1, "waitSeconds": self.wait_s})
            for lease in answer.get("leases") or []:
                await self._solve(client, lease)

    async def _solve(self, client: httpx.AsyncClient, lease: dict[str, Any]) -> None:
        spec = image_spec(lease.get("imageOptions") or {})
        try:
            reading = await self.pool.read(image_bytes(lease["task"], self.rules), spec)
        except UnreadableImage:
            reading = None
        solution, error = outcome(reading, spec)
        body: dict[str, Any] = {"leaseId": lease["leaseId"]}
        if solution is not None:
            body["solution"] = solution
            self.solved += 1
        else:
            body["errorCode"] = error
            self.failed += 1
        answer = await self._post(client, "complete", body)
        if answer.get("errorId"):
            log.info("completion of task %s refused: %s", lease.get("taskId"),
                     answer.get("errorCode"))
