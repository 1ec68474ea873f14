"""The worker protocol (spec §7): external solvers lease tasks, extend and complete them.

A lease id is ``<taskId>.<secret>``: the secret is drawn per lease call and stored as the
task's lease owner, so only the holder of a live lease can extend or complete it, and a
task leased again after expiry has a new id (the old one answers ERROR_LEASE_NOT_FOUND).
"""

from __future__ import annotations

import hashlib
import math
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from capd.config import Settings
from capd.constants import MAX_LEASE_BATCH, MAX_LEASE_EXTEND_S, MAX_LEASE_WAIT_S
from capd.domain.catalogue import TASK_TYPES
from capd.domain.solutions import WORKER_FAILURE_CODES, check_solution
from capd.errors import BadParameter, CapdError
from capd.service import Service
from capd.store.base import Task, TaskState, WorkerToken

_TOKEN_HEX_CHARS = 48  # longer than a 32-hex client key: the two can never be confused


def new_worker_token() -> str:
    return secrets.token_hex(_TOKEN_HEX_CHARS // 2)


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _number(body: dict[str, Any], name: str, default: float, low: float, high: float) -> float:
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            low <= value <= high):
        raise BadParameter(name, f"not a number in {low:g}-{high:g}")
    return float(value)


class WorkerDesk:
    def __init__(self, service: Service) -> None:
        self.service = service
        self.store = service.store
        self.dispatcher = service.dispatcher
        self.clock = service.clock
        self.settings: Settings = service.settings

    async def _token(self, raw: Any, types: list[str] | None = None) -> WorkerToken:
        token = None
        if isinstance(raw, str) and len(raw) == _TOKEN_HEX_CHARS:
            token = await self.store.worker_token(token_digest(raw))
        if token is None:
            raise CapdError("ERROR_WORKER_TOKEN_INVALID")
        if types and token.types is not None:
            outside = [t for t in types if t not in token.types]
            if outside:
                raise CapdError("ERROR_WORKER_TOKEN_INVALID",
                                f"the token does not serve {outside[0]}")
        return token

    @staticmethod
    def _types(body: dict[str, Any]) -> list[str]:
        types = body.get("types")
        if not isinstance(types, list) or not types or not all(
                isinstance(t, str) for t in types):
            raise BadParameter("types", "not a non-empty list of task type names")
        unknown = [t for t in types if t not in TASK_TYPES]
        if unknown:
            raise BadParameter("types", f"naming an unknown type {unknown[0][:64]!r}")
        return list(dict.fromkeys(types))

    def _lease_view(self, task: Task, owner: str) -> dict[str, Any]:
        view: dict[str, Any] = {
            "leaseId": f"{task.id}.{owner}", "taskId": task.id, "type": task.type,
            "task": task.payload,
            "leaseExpiresAt": math.floor(task.lease_until or 0),
            "deadlineAt": math.floor(task.deadline_at),
        }
        if "image" in task.options:
            view["imageOptions"] = task.options["image"]  # key options, e.g. a threshold
        return view

    async def lease(self, body: dict[str, Any],
                    gone: Callable[[], Awaitable[bool]] | None = None) -> dict[str, Any]:
        """Claim up to ``max`` tasks, waiting up to ``waitSeconds`` for work; ``gone`` tells
        whether the worker hung up meanwhile (then nothing more is claimed for it)."""
        types = self._types(body) if "types" in body else None
        await self._token(body.get("workerToken"), types)
        if types is None:
            raise BadParameter("types", "missing")
        limit = int(_number(body, "max", 1, 1, MAX_LEASE_BATCH))
        wait_s = _number(body, "waitSeconds", 0, 0, MAX_LEASE_WAIT_S)
        ends = time.monotonic() + wait_s
        owner = secrets.token_hex(12)
        while True:
            if gone is not None and await gone():
                return {"errorId": 0, "leases": []}
            await self.store.note_workers(types, self.clock())
            waiter = self.dispatcher.waiter(types)
            claimed = await self.store.claim_tasks(types, limit, owner,
                                                   self.settings.worker_lease_s, self.clock())
            remaining = ends - time.monotonic()
            if claimed or remaining <= 0:
                self.dispatcher.forget(waiter)
                return {"errorId": 0, "leases": [self._lease_view(t, owner) for t in claimed]}
            await self.dispatcher.wait(waiter, min(remaining, 1.0))

    async def _live_lease(self, body: dict[str, Any]) -> tuple[Task, str]:
        lease_id = body.get("leaseId")
        if not isinstance(lease_id, str) or "." not in lease_id:
            raise CapdError("ERROR_LEASE_NOT_FOUND")
        raw_id, owner = lease_id.split(".", 1)
        numeric = raw_id.isascii() and raw_id.isdigit()
        task = await self.store.get_task(int(raw_id)) if numeric and len(raw_id) < 19 else None
        if (task is None or task.state != TaskState.LEASED or task.lease_owner != owner
                or (task.lease_until or 0) <= self.clock()):
            raise CapdError("ERROR_LEASE_NOT_FOUND")
        return task, owner

    async def extend(self, body: dict[str, Any]) -> dict[str, Any]:
        await self._token(body.get("workerToken"))
        seconds = _number(body, "seconds", self.settings.worker_lease_s, 1, MAX_LEASE_EXTEND_S)
        task, owner = await self._live_lease(body)
        await self._token(body.get("workerToken"), [task.type])
        now = self.clock()
        until = await self.store.extend_lease(task.id, owner, now + seconds, now)
        if until is None:
            raise CapdError("ERROR_LEASE_NOT_FOUND")
        return {"errorId": 0, "leaseExpiresAt": math.floor(until)}

    async def complete(self, body: dict[str, Any]) -> dict[str, Any]:
        await self._token(body.get("workerToken"))
        solution, error_code = body.get("solution"), body.get("errorCode")
        if (solution is None) == (error_code is None):
            raise BadParameter("solution", "needed, or else errorCode (exactly one)")
        if error_code is not None and error_code not in WORKER_FAILURE_CODES:
            raise BadParameter("errorCode", "not one of the worker failure codes")
        task, owner = await self._live_lease(body)
        await self._token(body.get("workerToken"), [task.type])
        if solution is not None:
            solution = check_solution(TASK_TYPES[task.type], solution)
        done = await self.service.finish_task(task.id, solution=solution,
                                              error_code=error_code, owner=owner)
        if done is None:
            raise CapdError("ERROR_LEASE_NOT_FOUND")
        if error_code == "ERROR_PROXY_BANNED":
            address, port = task.payload.get("proxyAddress"), task.payload.get("proxyPort")
            if (isinstance(address, str) and isinstance(port, int | str)
                    and str(port).isascii() and str(port).isdigit()):
                await self.store.ban_proxy(address.strip(), int(port),
                                           self.clock() + self.settings.proxy_ban_s)
        return {"errorId": 0}
