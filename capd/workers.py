"""The worker protocol (spec §7): external solvers lease tasks, extend and complete them.

A lease id is ``<taskId>.<secret>``: the secret is drawn per lease call and stored, with
the id of the worker token that took the lease, as the task's lease owner
(``<tokenId>:<secret>``), so only the holder of a live lease, presenting the token that
took it, can extend or complete it, and a task leased again after expiry has a new id
(the old one answers ERROR_LEASE_NOT_FOUND). A token revoked during a long-poll claims
nothing more: the token is checked again before each claim after a wait.

A ``capd worker`` process says so in its lease calls (``builtinReader``, a field external
workers never send): it claims as a built-in reader (``Claimer.READER``: never a task
handed to humans), its lease secrets start with ``READER_MARK`` (so its leases are told
apart to the end: its answers are model output, kept as no module's samples), and an
ERROR_CAPTCHA_UNSOLVABLE it completes with may hand the task to humans instead
(``capd.solving.fallback``).

The desk takes typed requests (``capd/api/workers.py`` parses the JSON) and answers
records or raises CapdError. Store, dispatcher, clocks, secrets and settings are injected.
"""

from __future__ import annotations

import dataclasses
import logging
import secrets
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from capd.config import Settings
from capd.constants import MAX_TASK_DEPTH
from capd.domain.catalogue import TASK_TYPES
from capd.domain.hosts import normalise_host
from capd.domain.solutions import WORKER_FAILURE_CODES, check_solution
from capd.domain.tasks import nesting_depth
from capd.errors import BadParameter, CapdError
from capd.service.messages import Parsed
from capd.solving.dispatch import Dispatcher
from capd.solving.fallback import HumanFallback
from capd.store.base import Claimer, Store, Task, TaskState, WorkerToken
from capd.store.secrets import secret_digest

_TOKEN_HEX_CHARS = 48  # longer than a 32-hex client key: the two can never be confused
READER_MARK = "ocr-"  # starts the lease secret of a built-in reader (never hex)
LEASE_RECHECK_S = 1.0  # a long-poll looks at the queue at least this often

Finisher = Callable[..., Awaitable[Task | None]]
Gone = Callable[[], Awaitable[bool]]
Renderer = Callable[["Lease"], bytes]
UNRENDERABLE_CODE = "ERROR_CAPTCHA_UNSOLVABLE"  # a leased task no worker can be sent

log = logging.getLogger("capd.workers")


def new_worker_token() -> str:
    return secrets.token_hex(_TOKEN_HEX_CHARS // 2)


def token_digest(token: str) -> str:
    """What the store keeps of a worker token (the same digest as of an API key)."""
    return secret_digest(token)


def new_lease_secret() -> str:
    return secrets.token_hex(12)


def is_reader_owner(owner: str | None) -> bool:
    """Whether a lease owner (``<tokenId>:<secret>``) is a built-in reader's lease."""
    return owner is not None and owner.partition(":")[2].startswith(READER_MARK)


# -- requests and answers --------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class LeaseRequest:
    """lease: ``types`` (None when absent), ``limit`` tasks, waiting up to ``wait_s``;
    ``reader``: the caller is a built-in reader (``capd worker``), not an external one."""

    token: str | None
    types: Parsed[list[str] | None]
    limit: Parsed[int]
    wait_s: Parsed[float]
    reader: Parsed[bool] = Parsed(False)


@dataclass(frozen=True, slots=True)
class ExtendRequest:
    """extend: ``seconds`` from now (None: the configured lease length); ``release``
    ends the lease now instead, handing the task back to the queue."""

    token: str | None
    lease_id: str | None
    seconds: Parsed[float | None]
    release: Parsed[bool] = Parsed(False)


@dataclass(frozen=True, slots=True)
class CompleteRequest:
    """complete: exactly one of ``solution`` and ``error_code``, as sent."""

    token: str | None
    lease_id: str | None
    solution: Any = None
    error_code: Any = None


@dataclass(frozen=True, slots=True)
class Lease:
    """One leased task as a worker receives it."""

    lease_id: str
    task_id: int
    type: str
    task: dict[str, Any]  # the task object as the client sent it, proxy included
    expires_at: float  # unix seconds
    deadline_at: float
    image_options: dict[str, Any] | None = None  # key options, e.g. a threshold
    rendered: bytes | None = None  # the lease as the door sends it, when a renderer is given


def known_types(types: list[str]) -> list[str]:
    """The types, each once, in order; ERROR_BAD_PARAMETERS naming an unknown one."""
    unknown = [t for t in types if t not in TASK_TYPES]
    if unknown:
        raise BadParameter("types", f"naming an unknown type {unknown[0][:64]!r}")
    return list(dict.fromkeys(types))


class WorkerDesk:
    def __init__(self, store: Store, dispatcher: Dispatcher, clock: Callable[[], float],
                 settings: Settings, finish: Finisher,
                 new_secret: Callable[[], str] = new_lease_secret,
                 monotonic: Callable[[], float] = time.monotonic,
                 fallback: HumanFallback | None = None) -> None:
        self.store = store
        self.dispatcher = dispatcher
        self.clock = clock
        self.settings = settings
        self.finish = finish  # Service.finish_task: capture/release, metrics, callbacks
        self.new_secret = new_secret
        self.monotonic = monotonic
        self.fallback = fallback  # the human fallback, where the operator turned it on

    async def _token(self, raw: str | None, types: list[str] | None = None) -> WorkerToken:
        token = None
        if raw is not None and len(raw) == _TOKEN_HEX_CHARS:
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
    def _owner(token: WorkerToken, secret: str) -> str:
        """The lease owner stored with a task: the token that took the lease and the
        lease call's secret."""
        return f"{token.id}:{secret}"

    @staticmethod
    def _lease_view(task: Task, secret: str) -> Lease:
        return Lease(f"{task.id}.{secret}", task.id, task.type, task.payload,
                     task.lease_until or 0, task.deadline_at, task.options.get("image"))

    async def lease(self, req: LeaseRequest, gone: Gone | None = None,
                    render: Renderer | None = None) -> list[Lease]:
        """Claim up to ``limit`` tasks, waiting up to ``wait_s`` for work; ``gone`` tells
        whether the worker hung up meanwhile (then nothing more is claimed for it).

        ``render`` turns a lease into the bytes the door sends (kept in ``rendered``): a
        task it cannot render is failed at once (ERROR_CAPTCHA_UNSOLVABLE, uncharged)
        and left out, so one bad task can neither fail the batch nor stay leased to a
        worker who never received it."""
        types = req.types.get()
        if types is not None:
            types = known_types(types)
        token = await self._token(req.token, types)
        if types is None:
            raise BadParameter("types", "missing")
        limit = req.limit.get()
        wait_s = req.wait_s.get()
        claimer = Claimer.READER if req.reader.get() else Claimer.EXTERNAL
        ends = self.monotonic() + wait_s
        secret = self.new_secret()
        if claimer == Claimer.READER:
            secret = READER_MARK + secret
        owner = self._owner(token, secret)
        first = True
        while True:
            if gone is not None and await gone():
                return []
            if not first:  # revoked (or narrowed) while this call waited: claim nothing
                await self._token(req.token, types)
            first = False
            await self.store.note_workers(types, self.clock(), claimer)
            waiter = self.dispatcher.waiter(types)
            claimed = await self.store.claim_tasks(types, limit, owner,
                                                   self.settings.worker_lease_s, self.clock(),
                                                   claimer)
            remaining = ends - self.monotonic()
            if claimed or remaining <= 0:
                self.dispatcher.forget(waiter)
                views = [self._lease_view(t, secret) for t in claimed]
                return views if render is None else await self._rendered(views, render,
                                                                         owner)
            await self.dispatcher.wait(waiter, min(remaining, LEASE_RECHECK_S))

    async def _rendered(self, views: list[Lease], render: Renderer, owner: str
                        ) -> list[Lease]:
        out = []
        for view in views:
            try:
                out.append(dataclasses.replace(view, rendered=render(view)))
            except (TypeError, ValueError) as exc:  # orjson's errors are both
                log.warning("task %d cannot be sent to a worker (%s): failed", view.task_id,
                            exc)
                await self.finish(view.task_id, error_code=UNRENDERABLE_CODE, owner=owner)
        return out

    async def _live_lease(self, lease_id: str | None, token: WorkerToken
                          ) -> tuple[Task, str]:
        """The live task a lease id names, with its owner, when ``token`` took the lease;
        else ERROR_LEASE_NOT_FOUND (another token's lease is not found either)."""
        if lease_id is None or "." not in lease_id:
            raise CapdError("ERROR_LEASE_NOT_FOUND")
        raw_id, secret = lease_id.split(".", 1)
        owner = self._owner(token, secret)
        numeric = raw_id.isascii() and raw_id.isdigit()
        task = await self.store.get_task(int(raw_id)) if numeric and len(raw_id) < 19 else None
        if (task is None or task.state != TaskState.LEASED or task.lease_owner != owner
                or (not self.store.database_clock and (task.lease_until or 0) <= self.clock())):
            # on the database's clock the store alone can tell an ended lease (extend and
            # complete ask it); this node's clock may be off
            raise CapdError("ERROR_LEASE_NOT_FOUND")
        return task, owner

    async def extend(self, req: ExtendRequest) -> float:
        """Move a live lease's end to ``seconds`` from now, never earlier than it is and
        never past the task's deadline; returns the new end (unix seconds). With
        ``release`` the lease ends now (its task can be leased again at once)."""
        token = await self._token(req.token)
        release = req.release.get()
        seconds = req.seconds.get()
        if seconds is None:
            seconds = self.settings.worker_lease_s
        task, owner = await self._live_lease(req.lease_id, token)
        await self._token(req.token, [task.type])
        now = self.clock()
        until = await self.store.extend_lease(task.id, owner, now if release else now + seconds,
                                              now, keep_later=not release)
        if until is None:
            raise CapdError("ERROR_LEASE_NOT_FOUND")
        return until

    async def complete(self, req: CompleteRequest) -> None:
        """Complete a live lease once, with a solution of the type's shape or one of the
        worker failure codes; a proxy reported banned is refused for a while. A built-in
        reader's ERROR_CAPTCHA_UNSOLVABLE may hand the task to humans instead (the
        lease ends all the same)."""
        token = await self._token(req.token)
        solution, error_code = req.solution, req.error_code
        if (solution is None) == (error_code is None):
            raise BadParameter("solution", "needed, or else errorCode (exactly one)")
        if error_code is not None and (not isinstance(error_code, str)
                                       or error_code not in WORKER_FAILURE_CODES):
            raise BadParameter("errorCode", "not one of the worker failure codes")
        task, owner = await self._live_lease(req.lease_id, token)
        await self._token(req.token, [task.type])
        if solution is not None:
            if nesting_depth(solution, MAX_TASK_DEPTH) > MAX_TASK_DEPTH:
                raise CapdError("ERROR_BAD_SOLUTION",
                                f"solution nested deeper than {MAX_TASK_DEPTH} levels")
            solution = check_solution(TASK_TYPES[task.type], solution)
        if (self.fallback is not None and is_reader_owner(owner)
                and await self.fallback.hand_over(task.id, task.type, owner, error_code)):
            return
        done = await self.finish(task.id, solution=solution, error_code=error_code, owner=owner)
        if done is None:
            raise CapdError("ERROR_LEASE_NOT_FOUND")
        if error_code == "ERROR_PROXY_BANNED":
            address, port = task.payload.get("proxyAddress"), task.payload.get("proxyPort")
            # keyed on the normalised address: 127.1 and ::ffff:127.0.0.1 are 127.0.0.1
            normal = normalise_host(address.strip()) if isinstance(address, str) else None
            if (normal is not None and isinstance(port, int | str)
                    and str(port).isascii() and str(port).isdigit()):
                await self.store.ban_proxy(normal, int(port),
                                           self.clock() + self.settings.proxy_ban_s)
