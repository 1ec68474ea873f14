"""What a worker may hand back (spec §7): solution shapes per type and failure codes."""

from __future__ import annotations

from typing import Any

from capd.domain.catalogue import TaskType
from capd.errors import CapdError

# the failure codes a worker may complete with, which the client then sees (spec §7)
WORKER_FAILURE_CODES = frozenset({
    "ERROR_CAPTCHA_UNSOLVABLE", "ERROR_RECAPTCHA_TIMEOUT", "ERROR_RECAPTCHA_INVALID_SITEKEY",
    "ERROR_RECAPTCHA_INVALID_DOMAIN", "ERROR_PROXY_CONNECT_REFUSED", "ERROR_PROXY_BANNED",
    "ERROR_PROXY_NOT_AUTHORISED", "ERROR_PROXY_READ_TIMEOUT", "ERROR_TOKEN_EXPIRED",
})

_GEETEST_V3 = ("challenge", "validate", "seccode")
_GEETEST_V4 = ("captcha_id", "lot_number", "pass_token", "gen_time", "captcha_output")
# keys whose value is not a string
_LIST_KEYS = frozenset({"answer", "domains"})
_OBJECT_OR_STRING_KEYS = frozenset({"cookies", "headers", "data", "fingerprint"})
MAX_SOLUTION_VALUE_CHARS = 100_000


def _bad(field: str, why: str) -> CapdError:
    return CapdError("ERROR_BAD_SOLUTION", f"field '{field}' {why}")


def _check_value(name: str, value: Any) -> None:
    if name in _LIST_KEYS:
        if not isinstance(value, list) or not value:
            raise _bad(name, "must be a non-empty list")
    elif name in _OBJECT_OR_STRING_KEYS:
        if not isinstance(value, dict | str) or not value:
            raise _bad(name, "must be a non-empty object or string")
    elif not isinstance(value, str) or not value.strip():
        raise _bad(name, "must be a non-empty string")
    elif len(value) > MAX_SOLUTION_VALUE_CHARS:
        raise _bad(name, "is too long")


def check_solution(ttype: TaskType, solution: Any) -> dict[str, Any]:
    """The solution if it fits the type's shape, else ERROR_BAD_SOLUTION naming the field."""
    if not isinstance(solution, dict) or not solution:
        raise _bad("solution", "must be a non-empty object")
    if ttype.name.startswith("GeeTestTask"):
        shape = _GEETEST_V4 if "captcha_id" in solution or "lot_number" in solution else (
            _GEETEST_V3)
        for name in shape:
            if name not in solution:
                raise _bad(name, "is missing")
            _check_value(name, solution[name])
        return solution
    for name in ttype.solution_keys:
        if name not in solution:
            raise _bad(name, "is missing")
        _check_value(name, solution[name])
    if ttype.solution_any_of:
        present = [n for n in ttype.solution_any_of if n in solution]
        if not present:
            raise _bad(ttype.solution_any_of[0],
                       f"is missing (one of {', '.join(ttype.solution_any_of)} is needed)")
        for name in present:
            _check_value(name, solution[name])
    return solution
