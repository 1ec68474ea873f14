"""``capd worker``: the built-in OCR as a separate process that leases ImageToText work
from a capd server over the worker protocol (spec §7) — how another machine adds OCR
capacity. One long-polling lease loop per OCR thread."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, fields
from typing import Any

import httpx

from capd.domain.tasks import ImageSpec, ValidationRules, decode_image
from capd.errors import CapdError
from capd.solving.imagetask import IMAGE_TYPE, UNSOLVABLE, outcome
from capd.solving.ocr.base import UnreadableImage
from capd.solving.pool import OcrPool

log = logging.getLogger("capd.worker")

LEASE_WAIT_S = 20
RETRY_S = (0.5, 1, 2, 5)  # backoff while the server cannot be reached


class WorkerStopped(Exception):
    """Raised when the server refuses the worker token: retrying cannot help."""


class BadLease(Exception):
    """Raised when a lease cannot be read as an ImageToText task (bad base64, a task that
    is not an object, image options of unknown names or wrong types)."""


@dataclass(frozen=True)
class ImageLease:
    """One lease, read and checked: what the OCR pool needs."""

    lease_id: str
    image: bytes
    spec: ImageSpec


# the JSON type each ImageSpec field must have in a lease's imageOptions (bool is not an
# int here: JSON true is no threshold)
_SPEC_TYPES: dict[str, tuple[type, ...]] = {
    "module": (str,), "threshold": (int, type(None)), "case_sensitive": (bool,),
    "numeric": (int,), "math": (bool,), "min_length": (int,), "max_length": (int,)}
assert set(_SPEC_TYPES) == {f.name for f in fields(ImageSpec)}


def lease_spec(options: Any) -> ImageSpec:
    """The ImageSpec of a lease's ``imageOptions`` (absent: the defaults); BadLease when it
    is not an object of ImageSpec's fields with their JSON types."""
    if options is None:
        return ImageSpec()
    if not isinstance(options, dict):
        raise BadLease("imageOptions is not an object")
    for name, value in options.items():
        wanted = _SPEC_TYPES.get(name)
        if wanted is None:
            raise BadLease(f"imageOptions has an unknown field {str(name)[:40]!r}")
        if not isinstance(value, wanted) or (isinstance(value, bool) and bool not in wanted):
            raise BadLease(f"imageOptions.{name} has the wrong type")
    return ImageSpec(**options)


def read_lease(lease: Any, rules: ValidationRules) -> ImageLease:
    """A lease as the OCR needs it; BadLease when anything in it cannot be used (the lease
    id must be had first: without it the lease cannot even be failed)."""
    if not isinstance(lease, dict):
        raise BadLease("the lease is not an object")
    lease_id = lease.get("leaseId")
    if not isinstance(lease_id, str) or not lease_id:
        raise BadLease("the lease has no leaseId")
    task = lease.get("task")
    if not isinstance(task, dict):
        raise BadLease("task is not an object")
    spec = lease_spec(lease.get("imageOptions"))
    try:
        image = decode_image(task.get("body", task.get("Body")), rules)
    except CapdError as exc:
        raise BadLease(f"the image: {exc.code}{f' ({exc.detail})' if exc.detail else ''}"
                       ) from None
    return ImageLease(lease_id, image, spec)


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
            # builtinReader: this is capd's own reading, not a person (capd.workers)
            answer = await self._post(client, "lease", {
                "types": [IMAGE_TYPE], "max": 1, "waitSeconds": self.wait_s,
                "builtinReader": True})
            leases = answer.get("leases")
            for lease in leases if isinstance(leases, list) else []:
                await self._solve(client, lease)

    async def _solve(self, client: httpx.AsyncClient, lease: Any) -> None:
        """Read one lease and complete it. A lease that cannot be read, or whose reading
        fails unexpectedly, is one log line and a completion with ERROR_CAPTCHA_UNSOLVABLE
        (the client is not charged); the loop then goes on with the next lease."""
        task_id = lease.get("taskId") if isinstance(lease, dict) else None
        lease_id = lease.get("leaseId") if isinstance(lease, dict) else None
        solution: dict[str, Any] | None = None
        error: str | None = UNSOLVABLE
        try:
            job = read_lease(lease, self.rules)
            try:
                reading = await self.pool.read(job.image, job.spec)
            except UnreadableImage as exc:
                raise BadLease(f"the image does not decode ({str(exc)[:200]})") from None
            solution, error = outcome(reading, job.spec)
        except BadLease as exc:
            log.warning("task %s: bad lease, failed as %s: %s", task_id, UNSOLVABLE, exc)
        except Exception as exc:  # one task's failure must not stop the worker
            log.warning("task %s: reading failed, failed as %s: %s: %s", task_id, UNSOLVABLE,
                        type(exc).__name__, str(exc)[:200])
        if not isinstance(lease_id, str) or not lease_id:
            self.failed += 1
            return  # nothing to complete it with: it returns to the queue when its lease ends
        body: dict[str, Any] = {"leaseId": lease_id}
        if solution is not None:
            body["solution"] = solution
            self.solved += 1
        else:
            body["errorCode"] = error
            self.failed += 1
        answer = await self._post(client, "complete", body)
        if answer.get("errorId"):
            log.info("completion of task %s refused: %s", task_id, answer.get("errorCode"))
