"""The 2captcha / rucaptcha form front door: ``/in.php`` and ``/res.php`` (spec §9).

A thin transport: read the form or query parameters, build the service's typed requests
from them (an in.php method becomes the task object of the matching type), and render
the results in 2captcha's dialect — plain text (``OK|…``, ``CAPCHA_NOT_READY``,
``ERROR_…``) or, with ``json=1``, ``{"status": 1|0, "request": "…"}``. Failures are
raised and rendered once, by ``capd.api.errors``, through this door's ``TwoCaptchaDialect``.
Same accounts, balances, bans and limits as the JSON API, because it is the same Service.
"""

from __future__ import annotations

import base64
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any
from urllib.parse import parse_qsl

import orjson
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from capd.api.errors import Failure, FailureKind, UnreadableBody, use_dialect
from capd.api.middleware import CLIENT_IP
from capd.domain.keys import parse_client_key
from capd.domain.money import cost_text
from capd.errors import BadParameter, CapdError
from capd.service import (
    BalanceRequest,
    CreateTaskRequest,
    Credentials,
    ReportKind,
    ReportRequest,
    ResultState,
    Service,
    TaskResult,
    TaskResultRequest,
    parse_task_id,
)

Params = dict[str, str]
UPLOAD_PATHS = ("/in.php",)  # answered in this dialect by the body limit (spec §1)
MAX_IDS = 100  # res.php?action=get&ids=…: 2captcha takes up to 100 ids per call

# Internal code (capd/errors.py) -> the spelling 2captcha documents for the same outcome
# (2captcha.com/2captcha-api, "in.php errors" and "res.php errors"). A code not listed is
# sent as it is: every one contains "ERROR", which is how 2captcha clients spot an error.
# ERROR_BAD_PARAMETERS, ERROR_ZERO_BALANCE, ERROR_ZERO_CAPTCHA_FILESIZE,
# ERROR_TOO_BIG_CAPTCHA_FILESIZE, ERROR_IP_NOT_ALLOWED, ERROR_NO_SLOT_AVAILABLE,
# ERROR_CAPTCHA_UNSOLVABLE and ERROR_KEY_DOES_NOT_EXIST are spelled alike in both APIs.
CODES: dict[str, str] = {
    "ERROR_NO_SUCH_CAPCHA_ID": "ERROR_WRONG_CAPTCHA_ID",
    "ERROR_IP_BANNED": "IP_BANNED",  # 2captcha's one code without the ERROR_ prefix
    "ERROR_RECAPTCHA_INVALID_DOMAIN": "ERROR_PAGEURL",
    "ERROR_RECAPTCHA_INVALID_SITEKEY": "ERROR_GOOGLEKEY",
    "ERROR_PROXY_CONNECT_REFUSED": "ERROR_PROXY_CONNECTION_FAILED",
    "ERROR_PROXY_BANNED": "ERROR_BAD_PROXY",
    "ERROR_RECAPTCHA_TIMEOUT": "ERROR_CAPTCHA_UNSOLVABLE",  # 2captcha: any failed token
}
# res.php differs in one place: an unknown or missing action is ERROR_EMPTY_ACTION.
RES_CODES: dict[str, str] = {**CODES, "ERROR_NO_SUCH_METHOD": "ERROR_EMPTY_ACTION"}
# ERROR_BAD_PARAMETERS naming a task field that 2captcha has its own code for;
# the method None means every in.php method.
FIELD_CODES: dict[tuple[str | None, str], str] = {
    (None, "websiteURL"): "ERROR_PAGEURL",
    ("userrecaptcha", "websiteKey"): "ERROR_GOOGLEKEY",
}
WRONG_USER_KEY = "ERROR_WRONG_USER_KEY"  # the key is malformed, not merely unknown
WRONG_ID_FORMAT = "ERROR_WRONG_ID_FORMAT"  # the id is not a number
UPLOAD_ERROR = "ERROR_UPLOAD"  # the multipart body cannot be read
OK_REPORT = "OK_REPORT_RECORDED"
NOT_READY = "CAPCHA_NOT_READY"  # sic: 2captcha's spelling

# 2captcha's integer parameters and their documented ranges (min_len and max_len become
# the task's minLength and maxLength: bounds on the answer's length).
INT_RANGES: dict[str, tuple[int, int]] = {
    "regsense": (0, 1), "numeric": (0, 4), "calc": (0, 1), "phrase": (0, 1),
    "min_len": (0, 20), "max_len": (0, 20), "language": (0, 2), "enterprise": (0, 1),
    "invisible": (0, 1), "json": (0, 1), "header_acao": (0, 1),
}
# 2captcha numeric: 1 digits only, 2 letters only, 3 either, 4 both -> CapMonster numeric
# (1 digits only, 2 no digits, 0 anything); 3 and 4 constrain nothing character-wise.
NUMERIC: dict[int, int] = {1: 1, 2: 2}
# GeeTest v3 solution keys as 2captcha names them in its answer.
GEETEST_V3_ANSWER = {"challenge": "geetest_challenge", "validate": "geetest_validate",
                     "seccode": "geetest_seccode"}
TOKEN_KEYS = ("text", "gRecaptchaResponse", "token")  # a solution answered as one string
JSON_EXTRAS = {"userAgent": "useragent", "respKey": "respKey"}  # hCaptcha, with json=1


# -- answers -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Answer:
    """One 2captcha answer: ``text`` without json=1, ``payload`` with it."""

    text: str
    payload: dict[str, Any] = field(default_factory=dict)
    status: int = 200


def ok(value: Any, *, prefix: bool = True, **extra: Any) -> Answer:
    text = value if isinstance(value, str) else orjson.dumps(value).decode()
    return Answer(f"OK|{text}" if prefix else text, {"status": 1, "request": value, **extra})


def failure(code: str, description: str | None = None, status: int = 200) -> Answer:
    payload: dict[str, Any] = {"status": 0, "request": code}
    if description:
        payload["error_text"] = description
    return Answer(code, payload, status)


def render(answer: Answer, json_mode: bool, acao: bool) -> Response:
    headers = {"Access-Control-Allow-Origin": "*"} if acao else None
    if json_mode:
        return Response(orjson.dumps(answer.payload), answer.status, headers,
                        media_type="application/json")
    return PlainTextResponse(answer.text, answer.status, headers)


def solution_answer(solution: dict[str, Any]) -> Any:
    """What 2captcha answers for a solution: the token or text, else an object."""
    for name in TOKEN_KEYS:
        if isinstance(solution.get(name), str):
            return solution[name]
    if set(GEETEST_V3_ANSWER) <= set(solution):
        return {GEETEST_V3_ANSWER[k]: solution[k] for k in GEETEST_V3_ANSWER}
    return solution


def balance_text(balance: float) -> str:
    """A balance as plain decimal text (never scientific notation)."""
    return format(Decimal(repr(balance)), "f")


# -- parameters --------------------------------------------------------------------------------
async def read_params(request: Request) -> Params:
    """Query parameters, overlaid by the form (url-encoded or multipart) of a POST.

    A file part becomes its bytes as latin-1 text (lossless, see ``file_bytes``). A body
    without a form Content-Type is read as url-encoded, as PHP clients sometimes send it.
    """
    params: Params = dict(request.query_params)
    if request.method != "POST":
        return params
    ctype = request.headers.get("content-type", "").lower()
    if ctype.startswith(("multipart/form-data", "application/x-www-form-urlencoded")):
        try:
            form = await request.form()
        except HTTPException as exc:  # starlette's answer to a malformed form
            raise UnreadableBody(exc.detail) from None
        try:
            for name, value in form.multi_items():
                if isinstance(value, UploadFile):
                    params[name] = (await value.read()).decode("latin-1")
                else:
                    params[name] = value
        finally:
            await form.close()
    else:
        raw = await request.body()
        params.update(parse_qsl(raw.decode("utf-8", "replace"), keep_blank_values=True))
    return params


def file_bytes(text: str) -> bytes:
    """The bytes of a file part. Starlette hands a part without a filename over as text,
    decoded as UTF-8 when it can be and as latin-1 otherwise; undo whichever it was."""
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8")


def int_param(params: Params, name: str, default: int = 0) -> int:
    raw = params.get(name, "").strip()
    if not raw:
        return default
    low, high = INT_RANGES[name]
    if not (raw.isascii() and raw.isdigit()) or not low <= int(raw) <= high:
        raise BadParameter(name, f"not an integer {low}-{high}")
    return int(raw)


def float_param(params: Params, name: str) -> float:
    try:
        return float(params[name])
    except ValueError:
        raise BadParameter(name, "not a number") from None


def _set(task: dict[str, Any], params: Params, names: dict[str, str]) -> None:
    """Copy the given 2captcha parameters onto task fields, when present."""
    for param, task_field in names.items():
        if params.get(param):
            task[task_field] = params[param]


def proxy_fields(params: Params) -> dict[str, Any]:
    """``proxy=login:password@host:port`` with ``proxytype`` as CapMonster proxy fields.
    The domain judges completeness and the address (ERROR_PROXY_MISSING and friends)."""
    raw = params.get("proxy", "").strip()
    if not raw:
        return {}
    creds, _, hostport = raw.rpartition("@")
    host, _, port = hostport.rpartition(":")
    fields: dict[str, Any] = {
        "proxyType": (params.get("proxytype") or "http").lower(),
        "proxyAddress": host.strip("[]"),
        "proxyPort": int(port) if port.isascii() and port.isdigit() else port,
    }
    if creds:
        login, _, password = creds.partition(":")
        fields.update(proxyLogin=login, proxyPassword=password)
    return fields


# -- in.php methods -> CapMonster task objects --------------------------------------------
def image_task(params: Params) -> dict[str, Any]:
    task: dict[str, Any] = {"type": "ImageToTextTask"}
    if params.get("method") == "post":
        if params.get("file"):
            task["body"] = base64.b64encode(file_bytes(params["file"])).decode()
    elif params.get("body"):
        # a '+' sent unencoded in a url-encoded form arrives as a space; none is valid base64
        task["body"] = params["body"].replace(" ", "+")
    for name in ("phrase", "language"):
        int_param(params, name)  # accepted and checked; nothing to tell the recogniser
    for name, task_field in (("min_len", "minLength"), ("max_len", "maxLength")):
        length = int_param(params, name)  # 0: no bound
        if length:
            task[task_field] = length
    task["case"] = int_param(params, "regsense") == 1
    task["numeric"] = NUMERIC.get(int_param(params, "numeric"), 0)
    task["math"] = int_param(params, "calc") == 1
    return task


def recaptcha_task(params: Params) -> dict[str, Any]:
    proxy = proxy_fields(params)
    enterprise = int_param(params, "enterprise") == 1
    version = params.get("version", "v2").strip().lower() or "v2"
    task: dict[str, Any] = {}
    _set(task, params, {"pageurl": "websiteURL", "googlekey": "websiteKey",
                        "domain": "apiDomain"})
    if version == "v3":
        task["type"] = "RecaptchaV3EnterpriseTask" if enterprise else "RecaptchaV3TaskProxyless"
        if params.get("min_score"):
            task["minScore"] = float_param(params, "min_score")
        _set(task, params, {"action": "pageAction"})
    elif version == "v2":
        kind = "RecaptchaV2EnterpriseTask" if enterprise else "RecaptchaV2Task"
        task["type"] = kind if proxy else f"{kind}Proxyless"
        if int_param(params, "invisible"):
            task["isInvisible"] = True
        _set(task, params, {"data-s": "recaptchaDataSValue", "cookies": "cookies",
                            "useragent": "userAgent", "userAgent": "userAgent"})
    else:
        raise BadParameter("version", "not v2 or v3")
    return {**task, **proxy}


def hcaptcha_task(params: Params) -> dict[str, Any]:
    proxy = proxy_fields(params)
    task: dict[str, Any] = {"type": "HCaptchaTask" if proxy else "HCaptchaTaskProxyless"}
    _set(task, params, {"pageurl": "websiteURL", "sitekey": "websiteKey", "data": "data",
                        "useragent": "userAgent", "userAgent": "userAgent"})
    if int_param(params, "invisible"):
        task["isInvisible"] = True
    return {**task, **proxy}


def turnstile_task(params: Params) -> dict[str, Any]:
    proxy = proxy_fields(params)
    task: dict[str, Any] = {"type": "TurnstileTask" if proxy else "TurnstileTaskProxyless"}
    _set(task, params, {"pageurl": "websiteURL", "sitekey": "websiteKey",
                        "action": "pageAction", "data": "data", "pagedata": "pageData",
                        "useragent": "userAgent", "userAgent": "userAgent"})
    return {**task, **proxy}


def geetest_task(params: Params) -> dict[str, Any]:
    proxy = proxy_fields(params)
    task: dict[str, Any] = {"type": "GeeTestTask" if proxy else "GeeTestTaskProxyless"}
    _set(task, params, {"pageurl": "websiteURL", "api_server": "geetestApiServerSubdomain",
                        "useragent": "userAgent", "userAgent": "userAgent"})
    if params.get("method") == "geetest_v4" or params.get("version", "").strip() == "4":
        task["version"] = 4
        _set(task, params, {"captcha_id": "gt"})
        if params.get("risk_type"):
            task["initParameters"] = {"riskType": params["risk_type"]}
    else:
        _set(task, params, {"gt": "gt", "challenge": "challenge"})
    return {**task, **proxy}


METHODS: dict[str, Callable[[Params], dict[str, Any]]] = {
    "base64": image_task,
    "post": image_task,
    "userrecaptcha": recaptcha_task,
    "hcaptcha": hcaptcha_task,
    "turnstile": turnstile_task,
    "geetest": geetest_task,
    "geetest_v4": geetest_task,
}


def key_param(params: Params) -> str | None:
    return params.get("key")


def create_request(params: Params, ip: str) -> CreateTaskRequest:
    """The createTask request for an in.php call; raises the translation's CapdError."""
    translate = METHODS.get(params.get("method", ""))
    if translate is None:
        raise CapdError("ERROR_NO_SUCH_METHOD", f"in.php method {params.get('method')!r}")
    int_param(params, "json")
    int_param(params, "header_acao")
    return CreateTaskRequest(key_param(params), ip, translate(params))


# -- the two endpoints --------------------------------------------------------------------------
Action = Callable[[Service, Params, str], Awaitable[Answer]]


async def in_php(service: Service, params: Params, ip: str) -> Answer:
    try:
        request = create_request(params, ip)
    except CapdError:
        # the key, IP bans and whitelist answer before any field (spec §5)
        await service.authenticate(Credentials(key_param(params), ip))
        raise
    return ok(str((await service.create_task(request)).task_id))


async def _result(service: Service, params: Params, ip: str, task_id: str
                  ) -> tuple[Answer, TaskResult]:
    """One task's answer (OK, not ready, or its failure) and the result it renders."""
    result = await service.get_task_result(
        TaskResultRequest(key_param(params), ip, parse_task_id(task_id)))
    if result.state == ResultState.FAILED:
        code = result.error_code or "ERROR_CAPTCHA_UNSOLVABLE"
        return failure(RES_CODES.get(code, code), CapdError(code).description), result
    if result.state == ResultState.PROCESSING:
        return failure(NOT_READY), result
    solution = result.solution or {}
    extras = {name: solution[key] for key, name in JSON_EXTRAS.items() if key in solution}
    return ok(solution_answer(solution), **extras), result


async def action_get(service: Service, params: Params, ip: str) -> Answer:
    if "ids" not in params:
        return (await _result(service, params, ip, params.get("id", "")))[0]
    ids = [i.strip() for i in params["ids"].split(",") if i.strip()]
    if not ids or len(ids) > MAX_IDS:
        raise BadParameter("ids", f"not 1-{MAX_IDS} comma-separated ids")
    parts = []
    for task_id in ids:
        try:
            answer = (await _result(service, params, ip, task_id))[0]
        except CapdError as exc:  # this id's own outcome; key or ban errors end the call
            if exc.code not in ("ERROR_NO_SUCH_CAPCHA_ID", "ERROR_TOO_MUCH_REQUESTS"):
                raise
            answer = failure(RES_CODES.get(exc.code, exc.code))
        parts.append(answer.payload["request"] if answer.payload["status"] else answer.text)
    return ok("|".join(multi_id_part(str(p)) for p in parts), prefix=False)


def multi_id_part(text: str) -> str:
    """One id's answer in the ``|``-separated multi-id answer: ``%`` and ``|`` are
    percent-encoded (``%25``, ``%7C``), so that a solution containing ``|`` (FunCaptcha
    tokens do) cannot change how many answers the client reads. Single-id answers are
    sent as they are."""
    return text.replace("%", "%25").replace("|", "%7C")


async def action_get2(service: Service, params: Params, ip: str) -> Answer:
    answer, result = await _result(service, params, ip, params.get("id", ""))
    if not answer.payload["status"]:
        return answer
    cost = cost_text(result.cost)
    return Answer(f"{answer.text}|{cost}", {**answer.payload, "price": cost})


async def action_balance(service: Service, params: Params, ip: str) -> Answer:
    balance = await service.get_balance(BalanceRequest(key_param(params), ip))
    return ok(balance_text(float(balance.amount)), prefix=False)


def _report(params: Params, ip: str, kind: ReportKind) -> ReportRequest:
    return ReportRequest(key_param(params), ip, parse_task_id(params.get("id", "")), kind)


async def action_reportbad(service: Service, params: Params, ip: str) -> Answer:
    await service.report(_report(params, ip, ReportKind.BAD))
    return ok(OK_REPORT, prefix=False)


async def action_reportgood(service: Service, params: Params, ip: str) -> Answer:
    await service.report(_report(params, ip, ReportKind.GOOD))
    return ok(OK_REPORT, prefix=False)


ACTIONS: dict[str, Action] = {
    "get": action_get,
    "get2": action_get2,
    "getbalance": action_balance,
    "reportbad": action_reportbad,
    "reportgood": action_reportgood,
}


async def res_php(service: Service, params: Params, ip: str) -> Answer:
    action = ACTIONS.get(params.get("action", ""))
    if action is None:
        await service.authenticate(Credentials(key_param(params), ip))
        raise CapdError("ERROR_NO_SUCH_METHOD", f"res.php action {params.get('action')!r}")
    return await action(service, params, ip)


def error_answer(exc: CapdError, params: Params, codes: dict[str, str]) -> Answer:
    """A CapdError in 2captcha's spelling (see CODES and FIELD_CODES)."""
    code = codes.get(exc.code, exc.code)
    if exc.code == "ERROR_KEY_DOES_NOT_EXIST" and parse_client_key(params.get("key")) is None:
        code = WRONG_USER_KEY
    elif exc.code == "ERROR_NO_SUCH_CAPCHA_ID" and "ids" not in params and not params.get(
            "id", "").strip().isdigit():
        code = WRONG_ID_FORMAT
    elif isinstance(exc, BadParameter):
        method = params.get("method")
        code = FIELD_CODES.get((method, exc.field), FIELD_CODES.get((None, exc.field), code))
    return failure(code, exc.description)


@dataclass(frozen=True, slots=True)
class TwoCaptchaDialect:
    """How in.php and res.php render a failure: 2captcha's codes, as text or json=1."""

    method: str
    params: Params
    codes: dict[str, str]

    def render(self, fail: Failure) -> Response:
        if fail.error is not None:
            answer = error_answer(fail.error, self.params, self.codes)
        elif fail.kind == FailureKind.TOO_LARGE:
            answer = failure(fail.code, "the request body is over 1 MiB")
        elif fail.kind == FailureKind.UNREADABLE:
            answer = failure(UPLOAD_ERROR, "the multipart body cannot be read")
        else:  # the store's outage (503) or an internal error (500)
            answer = failure(fail.code, status=fail.status)
        return render(answer, self.params.get("json", "").strip() == "1",
                      self.params.get("header_acao", "").strip() == "1")


def endpoint(name: str, handler: Action, codes: dict[str, str]
             ) -> Callable[[Request], Awaitable[Response]]:
    """A door: parse the parameters, call, render the answer in 2captcha's dialect."""

    async def serve(request: Request) -> Response:
        scope = request.scope
        params: Params = dict(request.query_params)
        use_dialect(scope, TwoCaptchaDialect(name, params, codes))
        if request.method == "POST":
            params = await read_params(request)
            use_dialect(scope, TwoCaptchaDialect(name, params, codes))
        service: Service = request.app.state.service
        answer = await handler(service, params, scope[CLIENT_IP])
        outcome = "ok" if answer.payload.get("status") else answer.text
        service.metrics.inc("capd_requests_total", method=name, outcome=outcome)
        return render(answer, params.get("json", "").strip() == "1",
                      params.get("header_acao", "").strip() == "1")

    return serve


def routes() -> list[Route]:
    door_in = endpoint("in.php", in_php, CODES)
    door_res = endpoint("res.php", res_php, RES_CODES)
    return [
        Route("/in.php", door_in, methods=["GET", "POST"]),
        Route("/in.php/", door_in, methods=["GET", "POST"]),
        Route("/res.php", door_res, methods=["GET", "POST"]),
        Route("/res.php/", door_res, methods=["GET", "POST"]),
    ]
