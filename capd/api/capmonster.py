"""The CapMonster Cloud / anti-captcha v2 JSON front door (spec §1-3)."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Awaitable, Callable
from typing import Any

import asyncpg
import orjson
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from capd.api.middleware import CLIENT_IP, BodyTooLarge
from capd.errors import CATALOGUE, CapdError
from capd.service import Service

log = logging.getLogger("capd.api")

Handler = Callable[..., Awaitable[dict[str, Any]]]
CREATE_PATHS = ("/createTask",)
# The store cannot answer (locked or full SQLite file, PostgreSQL down or refusing
# connections): ERROR_SERVICE_UNAVAILABLE, which clients retry, not ERROR_INTERNAL.
STORE_UNAVAILABLE: tuple[type[BaseException], ...] = (
    sqlite3.OperationalError, OSError, TimeoutError, asyncpg.InterfaceError,
    asyncpg.PostgresConnectionError, asyncpg.exceptions.OperatorInterventionError,
    asyncpg.exceptions.InsufficientResourcesError)


def json_response(payload: dict[str, Any], status: int = 200) -> Response:
    return Response(orjson.dumps(payload), status, media_type="application/json")


def error_payload(code: str, description: str | None = None) -> dict[str, Any]:
    return {"errorId": 1, "errorCode": code,
            "errorDescription": description or CATALOGUE.get(code, code)}


async def read_json_object(request: Request) -> dict[str, Any] | None:
    """The body as a JSON object, or None when it is not one (any Content-Type)."""
    raw = await request.body()
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return None
    return data if isinstance(data, dict) else None


def api_method(name: str, handler: Handler, not_json_code: str, target: str = "service",
               with_request: bool = False) -> Callable[[Request], Awaitable[Response]]:
    """Wrap a handler: parse, call, render every outcome as HTTP 200 JSON (spec §1).

    The handler receives ``app.state.<target>`` (the Service, or the worker desk), and with
    ``with_request`` also the request (a long-poll watches for the client going away)."""
    is_create = name == "createTask"

    async def endpoint(request: Request) -> Response:
        state = request.app.state
        metrics = state.service.metrics
        try:
            body = await read_json_object(request)
            if body is None:
                raise CapdError(not_json_code, "the body is not a JSON object")
            args = (request,) if with_request else ()
            payload = await handler(getattr(state, target), body, request.scope[CLIENT_IP],
                                    *args)
            metrics.inc("capd_requests_total", method=name, outcome="ok")
            return json_response(payload)
        except CapdError as exc:
            metrics.inc("capd_requests_total", method=name, outcome=exc.code)
            payload = error_payload(exc.code, exc.description)
            if is_create:
                payload["taskId"] = 0
            return json_response(payload)
        except BodyTooLarge:
            metrics.inc("capd_requests_total", method=name, outcome="body_too_large")
            payload = error_payload("ERROR_TOO_BIG_CAPTCHA_FILESIZE")
            if is_create:
                payload["taskId"] = 0
                return json_response(payload)
            return json_response(payload, 413)
        except STORE_UNAVAILABLE as exc:
            log.warning("store unavailable during %s: %r", name, exc)
            metrics.inc("capd_requests_total", method=name, outcome="ERROR_SERVICE_UNAVAILABLE")
            return json_response(error_payload("ERROR_SERVICE_UNAVAILABLE"), 503)
        except Exception:
            log.exception("internal error in %s", name)
            metrics.inc("capd_requests_total", method=name, outcome="ERROR_INTERNAL")
            return json_response(error_payload("ERROR_INTERNAL"), 500)

    return endpoint


async def create_task(service: Service, body: dict[str, Any], ip: str) -> dict[str, Any]:
    return {"errorId": 0, "taskId": await service.create_task(body, ip)}


async def get_task_result(service: Service, body: dict[str, Any], ip: str) -> dict[str, Any]:
    result = await service.get_task_result(body, ip)
    if result["errorId"]:
        raise CapdError(result["errorCode"])
    return result


async def get_balance(service: Service, body: dict[str, Any], ip: str) -> dict[str, Any]:
    return {"errorId": 0, "balance": await service.get_balance(body, ip)}


async def report_image(service: Service, body: dict[str, Any], ip: str) -> dict[str, Any]:
    await service.report_incorrect(body, ip, image=True)
    return {"errorId": 0, "status": "success"}


async def report_token(service: Service, body: dict[str, Any], ip: str) -> dict[str, Any]:
    await service.report_incorrect(body, ip, image=False)
    return {"errorId": 0, "status": "success"}


async def get_queue_stats(service: Service, body: dict[str, Any], ip: str) -> dict[str, Any]:
    return await service.queue_stats(body)


async def get_spending_stats(service: Service, body: dict[str, Any], ip: str
                             ) -> dict[str, Any]:
    return {"errorId": 0, "data": await service.spending_stats(body, ip)}


METHODS: dict[str, tuple[Handler, str]] = {
    "createTask": (create_task, "ERROR_TASK_ABSENT"),
    "getTaskResult": (get_task_result, "ERROR_KEY_DOES_NOT_EXIST"),
    "getBalance": (get_balance, "ERROR_KEY_DOES_NOT_EXIST"),
    "reportIncorrectImageCaptcha": (report_image, "ERROR_KEY_DOES_NOT_EXIST"),
    "reportIncorrectTokenCaptcha": (report_token, "ERROR_KEY_DOES_NOT_EXIST"),
    "reportIncorrectRecaptcha": (report_token, "ERROR_KEY_DOES_NOT_EXIST"),
    "getQueueStats": (get_queue_stats, "ERROR_BAD_PARAMETERS"),
    "getSpendingStats": (get_spending_stats, "ERROR_KEY_DOES_NOT_EXIST"),
}


def routes() -> list[Route]:
    out = []
    for name, (handler, not_json) in METHODS.items():
        endpoint = api_method(name, handler, not_json)
        out.append(Route(f"/{name}", endpoint, methods=["POST"]))
        out.append(Route(f"/{name}/", endpoint, methods=["POST"]))
    return out
