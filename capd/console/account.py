"""The account holder's pages: sign in with an API key, balance and usage, keys and
whitelist, bans and blocks, recent tasks. Every read is of the session's own account:
no handler takes an account id from the request."""

from __future__ import annotations

import time
from collections import defaultdict
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from capd.admin import AdminError
from capd.console.charts import stacked_bars
from capd.console.common import (
    account_page,
    admin,
    client_ip,
    form_text,
    message,
    redirect,
    service,
)
from capd.console.render import page, usd
from capd.console.sessions import (
    ACCOUNT,
    ADMIN,
    Denied,
    clear_session_cookie,
    current_session,
    digest,
    open_session,
    session_form,
    set_session_cookie,
    set_signin_cookie,
    signin_form,
    signin_token,
)
from capd.constants import CONSOLE_ALL_USAGE_CACHE_S, CONSOLE_USAGE_DAYS
from capd.domain.usage import median, series, solve_rate
from capd.errors import CapdError
from capd.service import Credentials
from capd.store.base import ConsoleSession

DAY_S = 86400
SIGNIN_REFUSALS = {
    "ERROR_KEY_DOES_NOT_EXIST": (401, "No account holds that key."),
    "ERROR_IP_BANNED": (403, "Your address is banned for a while after repeated unknown"
                        " keys or tokens."),
    "ERROR_IP_NOT_ALLOWED": (403, "Your address is not on this account's IP whitelist."),
    "ERROR_IP_BLOCKED": (403, "This account is blocked from your address for a while after"
                         " repeated violations."),
}


def signin_page(request: Request, template: str, status: int = 200, error: str = "",
                **extra: Any) -> Response:
    token = signin_token(request)
    response = page(request, template, status, csrf=token, error=error, **extra)
    set_signin_cookie(response, request, token)
    return response


async def index(request: Request) -> Response:
    svc = service(request)
    session = await current_session(request, svc.store, svc.clock(), client_ip(request))
    if session is None:
        return signin_page(request, "signin.html")
    if session.kind == ADMIN:
        return redirect("/console/admin")
    return await overview(request, session)


async def signin(request: Request) -> Response:
    """An API key typed into the form: the same checks as an API request (IP ban, key,
    whitelist, block), so unknown keys count toward an IP ban here too."""
    try:
        form = await signin_form(request)
    except Denied as exc:
        return signin_page(request, "signin.html", exc.status, exc.message)
    svc = service(request)
    raw = form.get("key", "")
    try:
        caller, opts = await svc.authenticate(Credentials(
            raw.strip() if isinstance(raw, str) else None, client_ip(request)))
    except CapdError as exc:
        status, text = SIGNIN_REFUSALS.get(exc.code, (403, exc.description))
        return signin_page(request, "signin.html", status, text)
    opened = await open_session(svc.store, svc.clock(), ACCOUNT, account_id=caller.account_id,
                                key_digest=digest(opts.key))
    response = redirect("/console/")
    set_session_cookie(response, request, opened.token)
    return response


async def signout(request: Request) -> Response:
    svc = service(request)
    session = await current_session(request, svc.store, svc.clock(), client_ip(request))
    back = "/console/admin" if session is not None and session.kind == ADMIN else "/console/"
    if session is not None:
        try:
            await session_form(request, session)
        except Denied as exc:
            return message(request, exc.status, "Refused", exc.message)
        await svc.store.delete_console_session(session.token_hash)
    response = redirect(back)
    clear_session_cookie(response, request)
    return response


async def usage_context(request: Request, account_id: int | None) -> dict[str, Any]:
    """Tasks and spending per day and per type over CONSOLE_USAGE_DAYS, as charts and a
    table, with solve rate and median solve time (also used by the operator's pages).

    Every account's together (the operator's dashboard) reads all of the month's tasks:
    that answer is kept CONSOLE_ALL_USAGE_CACHE_S."""
    svc = service(request)
    now = svc.clock()
    if account_id is None:
        cached = getattr(request.app.state, "console_all_usage", None)
        if cached is not None and cached[0] > now:
            return cached[1]
        context = await _usage_context(request, None, now)
        request.app.state.console_all_usage = (now + CONSOLE_ALL_USAGE_CACHE_S, context)
        return context
    return await _usage_context(request, account_id, now)


async def _usage_context(request: Request, account_id: int | None,
                         now: float) -> dict[str, Any]:
    svc = service(request)
    start = (int(now) // DAY_S - CONSOLE_USAGE_DAYS + 1) * DAY_S
    rows = await svc.store.usage(account_id, start, start + CONSOLE_USAGE_DAYS * DAY_S, DAY_S)
    durations = await svc.store.solve_durations(account_id, start)
    types = sorted({r.type for r in rows})
    labels = [time.strftime("%m-%d", time.gmtime(start + i * DAY_S))
              for i in range(CONSOLE_USAGE_DAYS)]
    per_type = {t: series(rows, start, CONSOLE_USAGE_DAYS, DAY_S, [t]) for t in types}
    tasks_chart = stacked_bars("Tasks per day", labels,
                               {t: [b.tasks for b in per_type[t]] for t in types},
                               lambda v: f"{v:g}")
    money_chart = stacked_bars("Spending per day (USD)", labels,
                               {t: [b.spent_units for b in per_type[t]] for t in types},
                               lambda v: usd(int(v)))
    by_type_durations: dict[str, list[float]] = defaultdict(list)
    for t, s in durations:
        by_type_durations[t].append(s)
    table: list[dict[str, Any]] = []
    for t in types:
        buckets = per_type[t]
        solved, failed = sum(b.solved for b in buckets), sum(b.failed for b in buckets)
        table.append({"type": t, "tasks": sum(b.tasks for b in buckets), "solved": solved,
                      "failed": failed, "spent": sum(b.spent_units for b in buckets),
                      "rate": solve_rate(solved, failed),
                      "median": median(by_type_durations[t])})
    solved = sum(r["solved"] for r in table)
    failed = sum(r["failed"] for r in table)
    return {"tasks_chart": tasks_chart, "money_chart": money_chart, "usage_table": table,
            "solve_rate": solve_rate(solved, failed),
            "median_solve": median([s for _, s in durations]),
            "usage_days": CONSOLE_USAGE_DAYS,
            "total_tasks": sum(r["tasks"] for r in table),
            "total_spent": sum(r["spent"] for r in table)}


async def overview(request: Request, session: ConsoleSession) -> Response:
    svc = service(request)
    assert session.account_id is not None
    account = await svc.store.account(session.account_id)
    if account is None:
        return message(request, 404, "No account", "This account no longer exists.")
    ledger = await svc.store.ledger(account.id, 15)
    return page(request, "account/overview.html", account=account, ledger=ledger,
                available=account.balance_units - account.reserved_units,
                csrf=session.csrf, **await usage_context(request, account.id))


def masked(hint: str) -> str:
    """A key as pages show it: the hint the store keeps, never the key."""
    return f"{hint}…"


async def access_page(request: Request, session: ConsoleSession, status: int = 200,
                      error: str = "", new_key: str = "") -> Response:
    svc = service(request)
    assert session.account_id is not None
    now = svc.clock()
    keys = await svc.store.keys(session.account_id)
    bans = await svc.store.bans(now, active_only=False, account_id=session.account_id)
    bans.sort(key=lambda b: b.started_at, reverse=True)
    return page(request, "account/access.html", status,
                keys=[{"id": k.key_id, "masked": masked(k.hint), "record": k,
                       "current": k.digest == session.key_digest} for k in keys],
                whitelist=await svc.store.whitelist(session.account_id),
                bans=bans[:50], now=now, your_ip=client_ip(request), csrf=session.csrf,
                error=error, new_key=new_key)


@account_page
async def access(request: Request, session: ConsoleSession) -> Response:
    return await access_page(request, session)


@account_page
async def rotate_key(request: Request, session: ConsoleSession) -> Response:
    """Replace one of the account's live keys with a new one, shown once on this answer."""
    form = await session_form(request, session)
    wanted = form_text(form, "key_id", 64)
    svc = service(request)
    assert session.account_id is not None
    live = [k.digest for k in await svc.store.keys(session.account_id)
            if k.revoked_at is None and k.key_id == wanted]
    if not live:
        return await access_page(request, session, 404, "No live key of this account matches.")
    try:
        new_key = await admin(request).rotate_key_digest(session.account_id, live[0])
    except AdminError as exc:
        return await access_page(request, session, 400, str(exc))
    if live[0] == session.key_digest:
        await svc.store.set_console_session_key(session.token_hash, digest(new_key))
        session = ConsoleSession(session.token_hash, session.kind, session.account_id,
                                 digest(new_key), None, session.csrf, session.created_at,
                                 session.expires_at)
    return await access_page(request, session, new_key=new_key)


@account_page
async def whitelist_change(request: Request, session: ConsoleSession) -> Response:
    form = await session_form(request, session)
    network = form_text(form, "network", 64)
    action = form_text(form, "action", 10)
    assert session.account_id is not None
    try:
        if action == "add":
            await admin(request).whitelist_add(session.account_id, network)
        elif action == "remove":
            await admin(request).whitelist_remove(session.account_id, network)
        else:
            raise Denied(400, "Unknown action.")
    except AdminError as exc:
        return await access_page(request, session, 400, str(exc))
    return redirect("/console/access")


@account_page
async def tasks(request: Request, session: ConsoleSession) -> Response:
    svc = service(request)
    assert session.account_id is not None
    recent = await svc.store.recent_tasks(session.account_id, 50)
    return page(request, "account/tasks.html", tasks=recent, csrf=session.csrf)
