"""The worker protocol front door (spec §7): same conventions as the public API."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.routing import Route

from capd.api.capmonster import api_method
from capd.workers import WorkerDesk


async def lease(desk: WorkerDesk, body: dict[str, Any], ip: str,
                request: Request) -> dict[str, Any]:
    # a worker that hangs up mid-poll must not have tasks claimed for it afterwards
    return await desk.lease(body, gone=request.is_disconnected)


async def extend(desk: WorkerDesk, body: dict[str, Any], ip: str) -> dict[str, Any]:
    return await desk.extend(body)


async def complete(desk: WorkerDesk, body: dict[str, Any], ip: str) -> dict[str, Any]:
    return await desk.complete(body)


def routes() -> list[Route]:
    out = []
    for name, handler in (("lease", lease), ("extend", extend), ("complete", complete)):
        endpoint = api_method(f"worker.{name}", handler, "ERROR_WORKER_TOKEN_INVALID",
                              target="desk", with_request=name == "lease")
        out.append(Route(f"/worker/v1/{name}", endpoint, methods=["POST"]))
        out.append(Route(f"/worker/v1/{name}/", endpoint, methods=["POST"]))
    return out
