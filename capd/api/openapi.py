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
                                  "schema": {"oneOf": [success, _ERROR]}}}}},
    }}


def _task_schema() -> dict[str, Any]:
    return {"type": "object", "required": ["type"], "properties": {
        "type": {"type": "string", "enum": sorted(TASK_TYPES)},
        "body": {"type": "string", "description": "base64 image (ImageToTextTask)"},
        "capMonsterModule": {"type": "string"},
        "recognizingThreshold": {"type": "integer", "minimum": 0, "maximum": 100},
        "case": {"type": "boolean"},
        "numeric": {"type": "integer", "minimum": 0, "maximum": 2},
        "math": {"type": "boolean"},
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
            **_worker_paths(),
        },
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
