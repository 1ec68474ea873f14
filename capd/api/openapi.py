"""The OpenAPI document of the public methods (for clients and schema-driven fuzzing)."""

from __future__ import annotations

from typing import Any

from capd import __version__
from capd.domain.catalogue import TASK_TYPES
from capd.errors import CATALOGUE

_KEY = {"type": "string", "description": "32 lowercase hex characters, optionally with "
        "__options (spec §3)", "example": "0123456789abcdef0123456789abcdef"}
_TASK_ID = {"oneOf": [{"type": "integer", "minimum": 1}, {"type": "string", "pattern": "^[0-9]+$"}]}
_ERROR = {
    "type": "object",
    "required": ["errorId", "errorCode", "errorDescription"],
    "properties": {
        "errorId": {"type": "integer", "enum": [1]},
        "errorCode": {"type": "string", "enum": sorted(CATALOGUE)},
        "errorDescription": {"type": "string"},
        "taskId": {"type": "integer", "enum": [0]},
    },
}


def _ok(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "required": ["errorId", *required],
            "properties": {"errorId": {"type": "integer", "enum": [0]}, **properties}}


def _method(summary: str, request: dict[str, Any], success: dict[str, Any]) -> dict[str, Any]:
    return {"post": {
        "summary": summary,
        "requestBody": {"required": True, "content": {"application/json": {"schema": request}}},
        "responses": {"200": {"description": "Every API outcome, success or error",
                              "content": {"application/json": {
                                  "schema": {"oneOf": [success, _ERROR]}}}},
                      **_TRANSPORT_ERRORS},
    }}


def _error_response(description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": _ERROR}}}


# Answers that are not API outcomes (spec §1): clients retry 5xx.
_TRANSPORT_ERRORS = {
    "413": _error_response("Body over the 1 MiB limit (createTask answers it as 200)"),
    "500": _error_response("ERROR_INTERNAL"),
    "503": _error_response("ERROR_SERVICE_UNAVAILABLE: the store cannot answer now"),
}


def _task_schema() -> dict[str, Any]:
    return {"type": "object", "required": ["type"], "properties": {
        "type": {"type": "string", "enum": sorted(TASK_TYPES)},
        "body": {"type": "string", "description": "base64 image (ImageToTextTask)"},
        "capMonsterModule": {"type": "string"},
        "recognizingThreshold": {"type": "integer", "minimum": 0, "maximum": 100},
        "case": {"type": "boolean"},
        "numeric": {"type": "integer", "minimum": 0, "maximum": 2},
        "math": {"type": "boolean"},
        "minLength": {"type": "integer", "description": "ImageToTextTask: a hint, 1-20"
                      " (other values are ignored): the answer has at least this length"},
        "maxLength": {"type": "integer", "description": "ImageToTextTask: a hint, 1-20"
                      " (other values are ignored): the answer has at most this length"},
        "websiteURL": {"type": "string"},
        "websiteKey": {"type": "string"},
    }, "additionalProperties": True}


def openapi_document() -> dict[str, Any]:
    key_only = {"type": "object", "required": ["clientKey"], "properties": {"clientKey": _KEY}}
    with_task = {"type": "object", "required": ["clientKey", "taskId"],
                 "properties": {"clientKey": _KEY, "taskId": _TASK_ID}}
    report_ok = _ok({"status": {"type": "string", "enum": ["success"]}}, ["status"])
    return {
        "openapi": "3.0.3",
        "info": {"title": "capd", "version": __version__,
                 "description": "CapMonster Cloud / anti-captcha v2 compatible captcha API"},
        "paths": {
            "/createTask": _method("Create a task", {
                "type": "object", "required": ["clientKey", "task"],
                "properties": {"clientKey": _KEY, "task": _task_schema(),
                               "callbackUrl": {"type": "string"},
                               "softId": {"type": "integer"},
                               "languagePool": {"type": "string"}}},
                _ok({"taskId": {"type": "integer", "minimum": 1}}, ["taskId"])),
            "/getTaskResult": _method("Poll a task's result", with_task, {
                "oneOf": [
                    _ok({"status": {"type": "string", "enum": ["processing"]}}, ["status"]),
                    _ok({"status": {"type": "string", "enum": ["ready"]},
                         "solution": {"type": "object"}, "cost": {"type": "string"},
                         "ip": {"type": "string"}, "createTime": {"type": "integer"},
                         "endTime": {"type": "integer"}, "solveCount": {"type": "integer"}},
                        ["status", "solution"]),
                ]}),
            "/getBalance": _method("Available balance in USD", key_only,
                                   _ok({"balance": {"type": "number"}}, ["balance"])),
            "/reportIncorrectImageCaptcha": _method("Report a wrong image answer (refunds)",
                                                    with_task, report_ok),
            "/reportIncorrectTokenCaptcha": _method("Report a wrong token answer", with_task,
                                                    report_ok),
            "/reportIncorrectRecaptcha": _method("Alias of reportIncorrectTokenCaptcha",
                                                 with_task, report_ok),
            **_statistics_paths(),
            **_worker_paths(),
            **_twocaptcha_paths(),
        },
    }


def _statistics_paths() -> dict[str, Any]:
    """anti-captcha's statistics methods: queue load (no key) and the caller's spending."""
    from capd.domain.usage import QUEUE_NAMES, QUEUES

    record = {"type": "object", "required": ["dateFrom", "dateTill", "volume", "money"],
              "properties": {"dateFrom": {"type": "integer"}, "dateTill": {"type": "integer"},
                             "volume": {"type": "integer"}, "money": {"type": "number"}}}
    return {
        "/getQueueStats": _method("Load of a queue (anti-captcha queue ids)", {
            "type": "object", "required": ["queueId"],
            "properties": {"queueId": {"type": "integer", "enum": sorted(QUEUES)}}},
            _ok({"waiting": {"type": "integer"}, "load": {"type": "number"},
                 "bid": {"type": "number"}, "speed": {"type": "number"},
                 "total": {"type": "integer"}},
                ["waiting", "load", "bid", "speed", "total"])),
        "/getSpendingStats": _method("The caller's tasks and spending per hour, 24 hours", {
            "type": "object", "required": ["clientKey"],
            "properties": {"clientKey": _KEY,
                           "date": {"type": "integer", "minimum": 0,
                                    "description": "unix time in the first hour"},
                           "queue": {"type": "string",
                                     "description": "an anti-captcha queue name ("
                                     + ", ".join(sorted(QUEUE_NAMES)) + ") or a task type"},
                           "softId": {"type": "integer"},
                           "ip": {"type": "string"}}},
            _ok({"data": {"type": "array", "minItems": 24, "maxItems": 24,
                          "items": record}}, ["data"])),
    }


def _twocaptcha_paths() -> dict[str, Any]:
    """The 2captcha door (spec §9): query or form parameters; plain text answers
    (``OK|…``, ``CAPCHA_NOT_READY``, ``ERROR_…``), or JSON with ``json=1``."""
    def param(name: str, description: str = "") -> dict[str, Any]:
        return {"name": name, "in": "query", "required": False, "description": description,
                "schema": {"type": "string"}}

    answer = {"type": "object", "required": ["status", "request"], "properties": {
        "status": {"type": "integer", "enum": [0, 1]}, "request": {},
        "error_text": {"type": "string"}}}
    content = {"text/plain": {"schema": {"type": "string"}},
               "application/json": {"schema": answer}}
    responses = {code: {"description": text, "content": content} for code, text in (
        ("200", "Every outcome, success or error"), ("500", "ERROR_INTERNAL"),
        ("503", "ERROR_SERVICE_UNAVAILABLE"))}

    def get(summary: str, names: list[str]) -> dict[str, Any]:
        return {"get": {"summary": summary, "parameters": [param(n) for n in names],
                        "responses": responses}}

    return {
        "/in.php": get("Submit a captcha (2captcha dialect)", [
            "key", "method", "body", "json", "header_acao", "regsense", "numeric", "calc",
            "phrase", "min_len", "max_len", "language", "soft_id", "googlekey", "sitekey",
            "pageurl", "version", "enterprise", "invisible", "min_score", "action", "proxy",
            "proxytype", "gt", "challenge", "captcha_id", "api_server", "userAgent"]),
        "/res.php": get("Results, balance and reports (2captcha dialect)", [
            "key", "action", "id", "ids", "json", "header_acao"]),
    }


def _worker_paths() -> dict[str, Any]:
    """The worker protocol (spec §7)."""
    token = {"type": "string", "description": "48 hex characters (capd worker-token create)"}
    lease_id = {"type": "string", "description": "<taskId>.<secret>, from a lease"}
    lease_item = {"type": "object", "required": ["leaseId", "taskId", "type", "task",
                                                 "leaseExpiresAt", "deadlineAt"],
                  "properties": {"leaseId": lease_id, "taskId": {"type": "integer"},
                                 "type": {"type": "string"}, "task": {"type": "object"},
                                 "leaseExpiresAt": {"type": "integer"},
                                 "deadlineAt": {"type": "integer"},
                                 "imageOptions": {"type": "object"}}}
    return {
        "/worker/v1/lease": _method("Lease tasks (long-poll)", {
            "type": "object", "required": ["workerToken", "types"],
            "properties": {"workerToken": token,
                           "types": {"type": "array", "minItems": 1,
                                     "items": {"type": "string", "enum": sorted(TASK_TYPES)}},
                           "max": {"type": "integer", "minimum": 1, "maximum": 50},
                           "waitSeconds": {"type": "number", "minimum": 0, "maximum": 30}}},
            _ok({"leases": {"type": "array", "items": lease_item}}, ["leases"])),
        "/worker/v1/extend": _method("Extend a lease", {
            "type": "object", "required": ["workerToken", "leaseId", "seconds"],
            "properties": {"workerToken": token, "leaseId": lease_id,
                           "seconds": {"type": "number", "minimum": 1, "maximum": 300}}},
            _ok({"leaseExpiresAt": {"type": "integer"}}, ["leaseExpiresAt"])),
        "/worker/v1/complete": _method("Complete a leased task once", {
            "type": "object", "required": ["workerToken", "leaseId"],
            "properties": {"workerToken": token, "leaseId": lease_id,
                           "solution": {"type": "object"}, "errorCode": {"type": "string"}}},
            _ok({}, [])),
    }
