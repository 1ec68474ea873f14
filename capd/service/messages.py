"""What the service takes and answers: typed requests and results, free of any wire.

A front door parses its transport (CapMonster JSON, 2captcha form, a later web console)
into these requests, and renders the results (or the CapdError raised instead) in its
own dialect. Fields hold what the transport could tell, nothing judged yet: a clientKey
that is absent or not a string is None, a taskId that is not a positive integer is None;
the service decides what that means, in the spec's order.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any, Generic, TypeVar

from capd.errors import CapdError

T = TypeVar("T")

MAX_TASK_ID_DIGITS = 19  # a positive signed 64-bit integer has at most 19 digits


def parse_task_id(raw: object) -> int | None:
    """taskId as a JSON integer or a numeric string (spec §2); None when it is neither."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw if 0 < raw <= 2**63 - 1 else None
    if isinstance(raw, str):
        text = raw.strip()
        if text.isascii() and text.isdigit() and len(text) <= MAX_TASK_ID_DIGITS:
            value = int(text)
            return value if value > 0 else None
    return None


@dataclass(frozen=True, slots=True)
class Parsed(Generic[T]):
    """A request field as the transport read it, with the error it earns when malformed.

    The service raises that error only when its validation order reaches the field, so
    that an earlier failure (an unknown token, say) still answers first."""

    value: T
    error: CapdError | None = None

    def get(self) -> T:
        if self.error is not None:
            raise self.error
        return self.value


# -- requests ------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Credentials:
    """Who calls: the clientKey as sent (None when absent or not a string), from which IP."""

    client_key: str | None
    ip: str


@dataclass(frozen=True, slots=True)
class CreateTaskRequest(Credentials):
    """createTask: the task object (a JSON object, in CapMonster's field names, which is
    also what workers receive) and the callbackUrl as sent (checked in the spec's order)."""

    task: dict[str, Any]
    callback_url: object = None


@dataclass(frozen=True, slots=True)
class TaskResultRequest(Credentials):
    """getTaskResult of ``task_id`` (None: not an id at all)."""

    task_id: int | None


@dataclass(frozen=True, slots=True)
class BalanceRequest(Credentials):
    """getBalance."""


class ReportKind(StrEnum):
    """Which report: CapMonster's two per-family methods, or 2captcha's any-type pair."""

    IMAGE = "image"  # reportIncorrectImageCaptcha: image tasks only, refunds the charge
    TOKEN = "token"  # reportIncorrectTokenCaptcha: token tasks only, recorded
    BAD = "bad"  # res.php reportbad: either family, as its own report
    GOOD = "good"  # res.php reportgood: accepted for a recently solved task, changes nothing


@dataclass(frozen=True, slots=True)
class ReportRequest(Credentials):
    """A report on the caller's task ``task_id`` (None: not an id at all)."""

    task_id: int | None
    kind: ReportKind


@dataclass(frozen=True, slots=True)
class QueueStatsRequest:
    """getQueueStats (no key): ``queue_id`` as sent, None when it is not an integer."""

    queue_id: int | None


@dataclass(frozen=True, slots=True)
class SpendingStatsRequest(Credentials):
    """getSpendingStats: ``date`` (unix seconds in the first hour; None: the 24 hours up to
    now), ``queue`` (an anti-captcha queue name or a task type; None or "": all) and
    ``only_ip`` (the tasks created from this address; None: all)."""

    date: Parsed[int | None] = Parsed(None)
    queue: Parsed[str | None] = Parsed(None)
    only_ip: Parsed[str | None] = Parsed(None)


# -- results -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class TaskCreated:
    task_id: int


class ResultState(StrEnum):
    PROCESSING = "processing"
    READY = "ready"
    FAILED = "failed"  # the task ended without a solution (never charged): error_code says why


@dataclass(frozen=True, slots=True)
class TaskResult:
    """A task's outcome as a client sees it (getTaskResult, callbacks, res.php).

    A final result (READY or FAILED) never changes: the service hands out the same object
    for the same task while it remembers it, so a door may cache what it rendered."""

    task_id: int
    state: ResultState
    solution: dict[str, Any] | None = None
    cost: Decimal = Decimal(0)  # USD charged; zero until solved
    ip: str = ""  # the address the task was created from
    created_at: float = 0.0  # unix seconds
    ended_at: float = 0.0
    solve_count: int = 0
    error_code: str | None = None  # a catalogue code, when FAILED


@dataclass(frozen=True, slots=True)
class Balance:
    """Available balance in USD: the ledger balance less what in-flight tasks reserve."""

    amount: Decimal


@dataclass(frozen=True, slots=True)
class SpendingHour:
    """One hour of getSpendingStats: the caller's tasks created in it and what they cost
    (charges less refunds), in USD."""

    date_from: int  # unix seconds, the hour's first second
    date_till: int  # the hour's last second
    volume: int
    money: Decimal
