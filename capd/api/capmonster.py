"""The CapMonster Cloud / anti-captcha v2 JSON front door (spec §1-3).

Parse the JSON body into a typed request, call the service, render the result. Failures
are raised and rendered once, by ``capd.api.errors``, in this door's dialect.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import orjson
from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response
from starlette.routing import Route

from capd.api.errors import JsonDialect, error_payload, json_response, use_dialect
from capd.api.middleware import CLIENT_IP
from capd.domain.money import cost_text
from capd.errors import BadParameter, CapdError
from capd.service import (
    BalanceRequest,
    CreateTaskRequest,
    Parsed,
    QueueStatsRequest,
    ReportKind,
    ReportRequest,
    ResultState,
    Service,
    SpendingStatsRequest,
    TaskResult,
    TaskResultRequest,
    parse_task_id,
)

__all__ = ["CREATE_PATHS", "METHODS", "error_payload", "json_response", "result_payload",
           "routes"]

Body = dict[str, Any]
Handler = Callable[[Service, Body, str], Awaitable[Response]]
CREATE_PATHS = ("/createTask",)
RENDERED_KEPT = 10_000  # final getTaskResult answers kept rendered


class JsonBytes(Response):
    """An already serialised JSON answer (the poll path builds its headers directly)."""

    media_type = "application/json"

    def __init__(self, body: bytes, status_code: int = 200) -> None:
        self.status_code = status_code
        self.body = body
        self.background = None
        self.raw_headers = [(b"content-length", str(len(body)).encode()),
                            (b"content-type", b"application/json")]


_PROCESSING = orjson.dumps({"errorId": 0, "status": "processing"})


async def read_json_object(request: Request) -> Body | None:
    """The body as a JSON object, or None when it is not one (any Content-Type)."""
    chunks: list[bytes] = []
    while True:  # request.body() without its async generator: this is the hot path
        message = await request.receive()
        if message["type"] != "http.request":
            raise ClientDisconnect()
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    try:
        data = orjson.loads(chunks[0] if len(chunks) == 1 else b"".join(chunks))
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def client_key(body: Body) -> str | None:
    key = body.get("clientKey")
    return key if isinstance(key, str) else None


def result_payload(result: TaskResult) -> dict[str, Any]:
    """A task's outcome as getTaskResult answers it (and a callback posts it)."""
    if result.state == ResultState.PROCESSING:
        return {"errorId": 0, "status": "processing"}
    if result.state == ResultState.FAILED:
        code = result.error_code or "ERROR_CAPTCHA_UNSOLVABLE"
        return error_payload(code, CapdError(code).description)
    return {
        "errorId": 0, "status": "ready", "solution": result.solution,
        "cost": cost_text(result.cost), "ip": result.ip,
        "createTime": int(result.created_at), "endTime": int(result.ended_at),
        "solveCount": result.solve_count,
    }


# -- the methods: body -> request -> service -> answer ------------------------------------------
async def create_task(service: Service, body: Body, ip: str) -> Response:
    task = body.get("task")
    if not isinstance(task, dict):  # spec §5 step 1, before the key
        raise CapdError("ERROR_TASK_ABSENT")
    created = await service.create_task(CreateTaskRequest(
        client_key(body), ip, task, body.get("callbackUrl")))
    return json_response({"errorId": 0, "taskId": created.task_id})


_rendered: dict[int, tuple[TaskResult, bytes]] = {}


async def get_task_result(service: Service, body: Body, ip: str) -> Response:
    result = await service.get_task_result(TaskResultRequest(
        client_key(body), ip, parse_task_id(body.get("taskId"))))
    if result.state == ResultState.FAILED:
        raise CapdError(result.error_code or "ERROR_CAPTCHA_UNSOLVABLE")
    if result.state == ResultState.PROCESSING:
        return JsonBytes(_PROCESSING)
    # a final result is the same object each poll (see TaskResult): render it once
    hit = _rendered.get(result.task_id)
    if hit is not None and hit[0] is result:
        return JsonBytes(hit[1])
    if len(_rendered) >= RENDERED_KEPT:
        _rendered.clear()
    rendered = orjson.dumps(result_payload(result))
    _rendered[result.task_id] = (result, rendered)
    return JsonBytes(rendered)


async def get_balance(service: Service, body: Body, ip: str) -> Response:
    balance = await service.get_balance(BalanceRequest(client_key(body), ip))
    return json_response({"errorId": 0, "balance": float(balance.amount)})


def report(kind: ReportKind) -> Handler:
    async def handler(service: Service, body: Body, ip: str) -> Response:
        await service.report(ReportRequest(client_key(body), ip,
                                           parse_task_id(body.get("taskId")), kind))
        return json_response({"errorId": 0, "status": "success"})

    return handler


def whole_number(raw: object) -> int | None:
    """A positive integer sent as a JSON integer or a numeric string (not a float)."""
    return None if isinstance(raw, float) else parse_task_id(raw)


def optional_text(body: Body, name: str) -> Parsed[str | None]:
    raw = body.get(name)
    if raw is None or isinstance(raw, str):
        return Parsed(raw)
    return Parsed(None, BadParameter(name, "not a string"))


async def get_queue_stats(service: Service, body: Body, ip: str) -> Response:
    load = await service.queue_stats(QueueStatsRequest(whole_number(body.get("queueId"))))
    return json_response({"errorId": 0, "waiting": load.waiting, "load": load.load,
                          "bid": load.bid, "speed": load.speed, "total": load.total})


async def get_spending_stats(service: Service, body: Body, ip: str) -> Response:
    raw_date = body.get("date")
    date: Parsed[int | None] = Parsed(None)
    if raw_date is not None:
        value = whole_number(raw_date)
        date = Parsed(value, None if value is not None
                      else BadParameter("date", "not a unix timestamp"))
    hours = await service.spending_stats(SpendingStatsRequest(
        client_key(body), ip, date, optional_text(body, "queue"), optional_text(body, "ip")))
    return json_response({"errorId": 0, "data": [
        {"dateFrom": h.date_from, "dateTill": h.date_till, "volume": h.volume,
         "money": float(h.money)} for h in hours]})


# getTaskResult first: routes are matched in order, and it is by far the most called
METHODS: dict[str, tuple[Handler, str]] = {
    "getTaskResult": (get_task_result, "ERROR_KEY_DOES_NOT_EXIST"),
    "createTask": (create_task, "ERROR_TASK_ABSENT"),
    "getBalance": (get_balance, "ERROR_KEY_DOES_NOT_EXIST"),
    "reportIncorrectImageCaptcha": (report(ReportKind.IMAGE), "ERROR_KEY_DOES_NOT_EXIST"),
    "reportIncorrectTokenCaptcha": (report(ReportKind.TOKEN), "ERROR_KEY_DOES_NOT_EXIST"),
    "reportIncorrectRecaptcha": (report(ReportKind.TOKEN), "ERROR_KEY_DOES_NOT_EXIST"),
    "getQueueStats": (get_queue_stats, "ERROR_BAD_PARAMETERS"),
    "getSpendingStats": (get_spending_stats, "ERROR_KEY_DOES_NOT_EXIST"),
}


def api_method(name: str, handler: Handler, not_json_code: str
               ) -> Callable[[Request], Awaitable[Response]]:
    """The endpoint of one method: this door's dialect, the JSON body, the call, the
    success metric. A body that is not a JSON object answers ``not_json_code`` (spec §1)."""
    dialect = JsonDialect(name, create=name == "createTask")

    async def endpoint(request: Request) -> Response:
        scope = request.scope
        use_dialect(scope, dialect)
        body = await read_json_object(request)
        if body is None:
            raise CapdError(not_json_code, "the body is not a JSON object")
        service: Service = request.app.state.service
        response = await handler(service, body, scope[CLIENT_IP])
        service.metrics.inc("capd_requests_total", method=name, outcome="ok")
        return response

    return endpoint


def routes() -> list[Route]:
    out = []
    for name, (handler, not_json) in METHODS.items():
        endpoint = api_method(name, handler, not_json)
        out.append(Route(f"/{name}", endpoint, methods=["POST"]))
        out.append(Route(f"/{name}/", endpoint, methods=["POST"]))
    return out
