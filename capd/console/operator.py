"""The operator's pages: sign in with an admin token (``capd admin-token create``), then
accounts (search, create, top up or adjust), workers and queues, bans, the domain
blocklist, pending callbacks, prices and settings. Every change goes through the
AdminService, as the CLI's do."""

from __future__ import annotations

import dataclasses
from collections import defaultdict
from decimal import Decimal, InvalidOperation
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from capd.admin import AdminError
from capd.console.account import signin_page, usage_context
from capd.console.common import admin, admin_page, client_ip, form_text, redirect, service
from capd.console.render import page
from capd.console.sessions import (
    ACCOUNT,
    ADMIN,
    Denied,
    current_session,
    digest,
    open_session,
    session_form,
    set_session_cookie,
    signin_form,
)
from capd.domain.catalogue import TASK_TYPES
from capd.domain.usage import median, percentile
from capd.errors import CapdError
from capd.solving.pool import default_threads
from capd.store.base import ConsoleSession

ADMIN_TOKEN_CHARS = 64
LATENCY_WINDOW_S = 3600
SECRET_SETTINGS = ("database_url",)


async def actor(request: Request, session: ConsoleSession) -> str:
    """Who the ledger and ban records name: ``console:<admin token name>``."""
    token = await service(request).store.admin_token(session.admin_token_hash or "")
    return f"console:{token.name if token is not None else 'operator'}"


async def index(request: Request) -> Response:
    svc = service(request)
    session = await current_session(request, svc.store, svc.clock(), client_ip(request))
    if session is None:
        return signin_page(request, "admin/signin.html")
    if session.kind == ACCOUNT:
        return page(request, "message.html", 403, title="Not for this session",
                    text="The operator pages need an admin token; you are signed in with an"
                    " API key.", back="/console/")
    return await dashboard(request, session)


async def signin(request: Request) -> Response:
    """An admin token typed into the form; a wrong one counts toward an IP ban exactly as
    an unknown API key does."""
    try:
        form = await signin_form(request)
    except Denied as exc:
        return signin_page(request, "admin/signin.html", exc.status, exc.message)
    svc = service(request)
    ip, now = client_ip(request), svc.clock()
    raw = form.get("token", "")
    text = raw.strip() if isinstance(raw, str) else ""
    token = None
    if len(text) == ADMIN_TOKEN_CHARS:
        token = await svc.store.admin_token(digest(text))
    try:
        await svc.policy.check_ip_ban(ip, key_known=token is not None)
        if token is None:
            await svc.policy.note_unknown_key(ip)
            return signin_page(request, "admin/signin.html", 401, "That is not a live admin"
                               " token.")
    except CapdError:
        return signin_page(request, "admin/signin.html", 403, "Your address is banned for a"
                           " while after repeated unknown keys or tokens.")
    opened = await open_session(svc.store, now, ADMIN, admin_token_hash=digest(text))
    response = redirect("/console/admin")
    set_session_cookie(response, request, opened.token)
    return response


async def dashboard(request: Request, session: ConsoleSession) -> Response:
    """Queues and latency per type, workers online, pending callbacks, 30-day usage."""
    svc = service(request)
    now = svc.clock()
    open_tasks = await svc.store.open_tasks()
    latencies: dict[str, list[float]] = defaultdict(list)
    for ttype, seconds in await svc.store.solve_durations(None, now - LATENCY_WINDOW_S):
        latencies[ttype].append(seconds)
    queues = [{"type": t, "queued": open_tasks.get(t, (0, 0))[0],
               "leased": open_tasks.get(t, (0, 0))[1], "limit": svc.settings.depth_limit(t),
               "solved": len(latencies[t]), "p50": median(latencies[t]),
               "p95": percentile(latencies[t], 0.95)}
              for t in sorted(set(open_tasks) | set(latencies))]
    window = svc.settings.worker_seen_window_s
    workers = [{"activity": w, "online": w.last_seen is not None and w.last_seen >= now - window,
                "external": w.leases_held - w.builtin_leases}
               for w in await svc.store.workers_online(now)]
    return page(request, "admin/dashboard.html", queues=queues, workers=workers, now=now,
                builtin_threads=(svc.settings.ocr_threads or default_threads())
                if svc.settings.builtin_ocr else 0,
                callbacks=await svc.store.callback_counts(),
                csrf=session.csrf, **await usage_context(request, None))


@admin_page
async def accounts(request: Request, session: ConsoleSession) -> Response:
    query = request.query_params.get("q", "")[:100]
    found = await admin(request).find_accounts(query, 100) if query.strip() else []
    return page(request, "admin/accounts.html", query=query, found=found, csrf=session.csrf,
                error="", created=None)


def _amount(text: str) -> Decimal:
    try:
        return Decimal(text or "0")
    except InvalidOperation:
        raise Denied(400, f"Not an amount in USD: {text[:40]!r}.") from None


@admin_page
async def create_account(request: Request, session: ConsoleSession) -> Response:
    form = await session_form(request, session)
    name = form_text(form, "name", 100) or "account"
    note = form_text(form, "note", 200)
    try:
        created = await admin(request).create_account(name, _amount(form_text(form, "balance",
                                                                               40)), note)
    except AdminError as exc:
        return page(request, "admin/accounts.html", 400, query="", found=[], csrf=session.csrf,
                    error=str(exc), created=None)
    return page(request, "admin/accounts.html", query="", found=[], csrf=session.csrf,
                error="", created=created)


async def _account_page(request: Request, session: ConsoleSession, account_id: int,
                        status: int = 200, error: str = "") -> Response:
    try:
        view = await admin(request).account_view(account_id, 20)
    except AdminError as exc:
        return page(request, "message.html", 404, title="No such account", text=str(exc),
                    back="/console/admin/accounts")
    return page(request, "admin/account.html", status, view=view, csrf=session.csrf,
                error=error, now=service(request).clock(),
                **await usage_context(request, account_id))


@admin_page
async def account(request: Request, session: ConsoleSession) -> Response:
    return await _account_page(request, session, request.path_params["account_id"])


@admin_page
async def adjust(request: Request, session: ConsoleSession) -> Response:
    """Top up (positive) or adjust (negative) with a note: the ledger rules of the CLI."""
    account_id = request.path_params["account_id"]
    form = await session_form(request, session)
    note = form_text(form, "note", 200)
    try:
        amount = _amount(form_text(form, "amount", 40))
        await admin(request).adjust(account_id, amount, note or "console adjustment",
                                    await actor(request, session))
    except (AdminError, Denied) as exc:
        return await _account_page(request, session, account_id, 400, str(exc))
    return redirect(f"/console/admin/accounts/{account_id}")


@admin_page
async def bans(request: Request, session: ConsoleSession) -> Response:
    svc = service(request)
    history = await admin(request).bans(active_only=False)
    now = svc.clock()
    active = [b for b in history if b.lifted_at is None and b.ends_at > now]
    past = [b for b in reversed(history) if b not in active][:100]
    return page(request, "admin/bans.html", active=active, past=past, now=now,
                csrf=session.csrf)


@admin_page
async def lift_ban(request: Request, session: ConsoleSession) -> Response:
    await session_form(request, session)
    by = await actor(request, session)
    await admin(request).lift_ban(request.path_params["ban_id"], by)
    return redirect("/console/admin/bans")


async def _blocklist_page(request: Request, session: ConsoleSession, status: int = 200,
                          error: str = "") -> Response:
    return page(request, "admin/blocklist.html", status,
                domains=await admin(request).blocklist(), csrf=session.csrf, error=error)


@admin_page
async def blocklist(request: Request, session: ConsoleSession) -> Response:
    return await _blocklist_page(request, session)


@admin_page
async def blocklist_change(request: Request, session: ConsoleSession) -> Response:
    form = await session_form(request, session)
    domain = form_text(form, "domain", 253)
    action = form_text(form, "action", 10)
    try:
        if action == "add":
            await admin(request).blocklist_add(domain)
        elif action == "remove":
            await admin(request).blocklist_remove(domain)
        else:
            raise Denied(400, "Unknown action.")
    except AdminError as exc:
        return await _blocklist_page(request, session, 400, str(exc))
    return redirect("/console/admin/blocklist")


def _setting_text(value: Any) -> str:
    if isinstance(value, dict) or hasattr(value, "items"):
        return ", ".join(f"{k}={v}" for k, v in sorted(value.items())) or "-"
    if isinstance(value, tuple):
        return ", ".join(str(v) for v in value) or "-"
    return str(value)


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        creds, _, host = rest.rpartition("@")
        return f"{scheme}://{creds.split(':', 1)[0]}:***@{host}"
    return url


@admin_page
async def settings(request: Request, session: ConsoleSession) -> Response:
    """Prices per task type and every setting in force, read-only."""
    s = service(request).settings
    values = []
    for f in dataclasses.fields(s):
        value = getattr(s, f.name)
        text = _redact(value) if f.name in SECRET_SETTINGS else _setting_text(value)
        values.append((f.name, text))
    prices = [(t, s.price_per_1000(t), TASK_TYPES[t].built_in) for t in sorted(TASK_TYPES)]
    return page(request, "admin/settings.html", values=values, prices=prices,
                csrf=session.csrf)

