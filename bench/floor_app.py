"""The floor for bench_core: the least a Starlette app served like capd can do per poll.

One POST endpoint, ``/getTaskResult``, reads the body, parses it with orjson and answers
the stored payload of the ``taskId`` it names (a dict lookup, serialised per request as
capd does). It is served exactly as ``capd serve`` serves capd: uvicorn, one process,
``loop="uvloop"``, ``http="httptools"``, no access log, log level warning.

    python -m bench.floor_app --port 8099 --task-id 123 --answer '{"errorId": 0, ...}'
"""

from __future__ import annotations

import argparse
from typing import Any

import orjson
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

NO_SUCH_TASK: dict[str, Any] = {"errorId": 1, "errorCode": "ERROR_NO_SUCH_CAPCHA_ID",
                                "errorDescription": "Task with this ID not found"}


def build_app(answers: dict[int, dict[str, Any]]) -> Starlette:
    """The floor app answering ``answers[taskId]`` (or NO_SUCH_TASK)."""

    async def get_task_result(request: Request) -> Response:
        try:
            body = orjson.loads(await request.body())
        except orjson.JSONDecodeError:
            body = None
        task_id = body.get("taskId") if isinstance(body, dict) else None
        answer = answers.get(task_id, NO_SUCH_TASK) if isinstance(task_id, int) else NO_SUCH_TASK
        return Response(orjson.dumps(answer), media_type="application/json")

    async def healthz(request: Request) -> Response:
        return Response(orjson.dumps({"status": "ok"}), media_type="application/json")

    return Starlette(routes=[
        Route("/getTaskResult", get_task_result, methods=["POST"]),
        Route("/healthz", healthz, methods=["GET"]),
    ])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.floor_app", description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--task-id", type=int, default=1)
    parser.add_argument("--answer", default='{"errorId": 0, "status": "ready",'
                        ' "solution": {"text": "abc12"}}',
                        help="the JSON object answered for --task-id")
    args = parser.parse_args(argv)
    answer = orjson.loads(args.answer)
    if not isinstance(answer, dict):
        parser.error("--answer must be a JSON object")
    uvicorn.run(build_app({args.task_id: answer}), host=args.host, port=args.port,
                loop="uvloop", http="httptools", access_log=False, log_level="warning",
                lifespan="on")


if __name__ == "__main__":
    main()
