"""The worker protocol front door (spec §7): same conventions as the public API.

Parse the JSON body into the desk's typed requests, call the desk, render the answer.
A field of the wrong JSON shape is carried as a ``Parsed`` error, which the desk raises
when its validation order reaches the field. Failures are rendered once, by
``capd.api.errors``, in the JSON dialect.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from capd.api.capmonster import read_json_object
from capd.api.errors import JsonDialect, json_response, use_dialect
from capd.constants import MAX_LEASE_BATCH, MAX_LEASE_EXTEND_S, MAX_LEASE_WAIT_S
from capd.errors import BadParameter, CapdError
from capd.service.messages import Parsed
from capd.workers import CompleteRequest, ExtendRequest, Lease, LeaseRequest, WorkerDesk

Body = dict[str, Any]
Handler = Callable[[WorkerDesk, Body, Request], Awaitable[Response]]


def _text(body: Body, name: str) -> str | None:
    value = body.get(name)
    return value if isinstance(value, str) else None


def number(body: Body, name: str, low: float, high: float) -> Parsed[float | None]:
    """A JSON number in [low, high]; None when absent."""
    if name not in body:
        return Parsed(None)
    value = body[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or not (
            low <= value <= high):
        return Parsed(None, BadParameter(name, f"not a number in {low:g}-{high:g}"))
    return Parsed(float(value))


def _or_default(parsed: Parsed[float | None], default: float) -> Parsed[float]:
    if parsed.error is not None:
        return Parsed(default, parsed.error)
    return Parsed(default if parsed.value is None else parsed.value)


def flag(body: Body, name: str) -> Parsed[bool]:
    """A JSON boolean; False when absent."""
    value = body.get(name, False)
    if not isinstance(value, bool):
        return Parsed(False, BadParameter(name, "not a boolean"))
    return Parsed(value)


def type_list(body: Body) -> Parsed[list[str] | None]:
    """``types``: a non-empty list of strings; None when absent."""
    if "types" not in body:
        return Parsed(None)
    types = body["types"]
    if not isinstance(types, list) or not types or not all(isinstance(t, str) for t in types):
        return Parsed(None, BadParameter("types", "not a non-empty list of task type names"))
    return Parsed(types)


def lease_payload(lease: Lease) -> dict[str, Any]:
    view: dict[str, Any] = {
        "leaseId": lease.lease_id, "taskId": lease.task_id, "type": lease.type,
        "task": lease.task, "leaseExpiresAt": math.floor(lease.expires_at),
        "deadlineAt": math.floor(lease.deadline_at),
    }
    if lease.image_options is not None:
        view["imageOptions"] = lease.image_options
    return view


def render_lease(lease: Lease) -> bytes:
    """One lease as JSON; raises (TypeError/ValueError) when its task cannot be encoded."""
    return orjson.dumps(lease_payload(lease))


async def lease(desk: WorkerDesk, body: Body, request: Request) -> Response:
    limit = _or_default(number(body, "max", 1, MAX_LEASE_BATCH), 1)
    req = LeaseRequest(_text(body, "workerToken"), type_list(body),
                       Parsed(int(limit.value), limit.error),
                       _or_default(number(body, "waitSeconds", 0, MAX_LEASE_WAIT_S), 0),
                       flag(body, "builtinReader"))
    # a worker that hangs up mid-poll must not have tasks claimed for it afterwards; each
    # lease is rendered by the desk right after the claim (a task that cannot be is
    # failed there), so this answer cannot fail once tasks are claimed
    leases = await desk.lease(req, gone=request.is_disconnected, render=render_lease)
    answer = b'{"errorId":0,"leases":[' + b",".join(
        x.rendered for x in leases if x.rendered is not None) + b"]}"
    return Response(answer, media_type="application/json")


async def extend(desk: WorkerDesk, body: Body, request: Request) -> Response:
    until = await desk.extend(ExtendRequest(
        _text(body, "workerToken"), _text(body, "leaseId"),
        number(body, "seconds", 1, MAX_LEASE_EXTEND_S), flag(body, "release")))
    return json_response({"errorId": 0, "leaseExpiresAt": math.floor(until)})


async def complete(desk: WorkerDesk, body: Body, request: Request) -> Response:
    await desk.complete(CompleteRequest(_text(body, "workerToken"), _text(body, "leaseId"),
                                        body.get("solution"), body.get("errorCode")))
    return json_response({"errorId": 0})


def worker_method(name: str, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    method = f"worker.{name}"
    dialect = JsonDialect(method)

    async def endpoint(request: Request) -> Response:
        use_dialect(request.scope, dialect)
        body = await read_json_object(request)
        if body is None:
            raise CapdError("ERROR_WORKER_TOKEN_INVALID", "the body is not a JSON object")
        response = await handler(request.app.state.desk, body, request)
        request.app.state.service.metrics.inc("capd_requests_total", method=method,
                                              outcome="ok")
        return response

    return endpoint


def routes() -> list[Route]:
    out = []
    for name, handler in (("lease", lease), ("extend", extend), ("complete", complete)):
        endpoint = worker_method(name, handler)
        out.append(Route(f"/worker/v1/{name}", endpoint, methods=["POST"]))
        out.append(Route(f"/worker/v1/{name}/", endpoint, methods=["POST"]))
    return out
