"""Operator commands: parse arguments, call the store and domain, print.

Every command takes its database from ``--db URL``, else ``CAPD_DATABASE_URL``, else
``sqlite:///capd.db`` in the working directory. Bad input prints one line on stderr and
exits non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import json
import os
import sqlite3
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from typing import Any, NoReturn

from capd.config import Settings, load_settings
from capd.domain.keys import is_key, new_key
from capd.domain.money import parse_amount, to_units, usd_text
from capd.errors import ConfigError, InsufficientFunds
from capd.store import open_store
from capd.store.base import Store

DEMO_KEY_META = "demo_key"


class CliError(Exception):
    """Raised when a command cannot do what was asked; its message is the one line shown."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _iso(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _amount(text: str) -> Decimal:
    try:
        return parse_amount(text)
    except InvalidOperation:
        raise CliError(f"not an amount in USD: {text!r}") from None
    except ValueError as exc:
        raise CliError(f"not a usable amount in USD: {text!r} ({exc})") from None


def _key_arg(text: str) -> str:
    if not is_key(text):
        raise CliError(f"not an API key (32 lowercase hex characters): {text!r}")
    return text


async def _account_id(store: Store, key: str) -> int:
    account = await store.account_for_key(_key_arg(key))
    if account is None:
        raise CliError("no account holds that key")
    return account.id


# -- commands -------------------------------------------------------------------------------
async def cmd_migrate(store: Store, args: argparse.Namespace, settings: Settings) -> None:
    print(f"schema version {await store.migrate()}")


async def cmd_account_create(store: Store, args: argparse.Namespace, settings: Settings) -> None:
    amount = _amount(args.balance)
    if amount < 0:
        raise CliError("the opening balance cannot be negative")
    key = new_key()
    now = time.time()
    account_id = await store.create_account(args.name, key, now)
    if amount:
        await store.adjust_balance(account_id, to_units(amount), "topup", "operator",
                                   "opening balance", now)
    print(f"account {account_id} ({args.name}) balance {usd_text(to_units(amount))} USD")
    print(key)


async def cmd_account_topup(store: Store, args: argparse.Namespace, settings: Settings) -> None:
    amount = _amount(args.amount)
    if amount == 0:
        raise CliError("a top-up of zero changes nothing")
    account_id = await _account_id(store, args.key)
    kind = "topup" if amount > 0 else "adjustment"
    try:
        balance = await store.adjust_balance(account_id, to_units(amount), kind, "operator",
                                             args.note, time.time())
    except InsufficientFunds:
        raise CliError("that would take the balance below what running tasks reserve") from None
    except ValueError as exc:
        raise CliError(str(exc)) from None
    print(f"balance {usd_text(balance)} USD")


async def cmd_account_show(store: Store, args: argparse.Namespace, settings: Settings) -> None:
    account_id = await _account_id(store, args.key)
    account = await store.account(account_id)
    assert account is not None
    print(f"account {account.id} ({account.name}) created {_iso(account.created_at)}")
    print(f"balance {usd_text(account.balance_units)} USD,"
          f" reserved {usd_text(account.reserved_units)} USD,"
          f" available {usd_text(account.balance_units - account.reserved_units)} USD")
    print("keys:")
    for k in await store.keys(account_id):
        state = f"revoked {_iso(k.revoked_at)}" if k.revoked_at else "live"
        print(f"  {k.key}  {state}")
    nets = await store.whitelist(account_id)
    print("whitelist: " + (", ".join(nets) if nets else "(any address)"))
    print("recent ledger:")
    for e in await store.ledger(account_id, 10):
        task = f" task {e.task_id}" if e.task_id else ""
        print(f"  {_iso(e.at)}  {e.kind:<10} {usd_text(e.amount_units):>14}  {e.actor}{task}"
              f"  {e.note}")
    bans = await store.bans(time.time(), active_only=False, account_id=account_id)
    print("bans:" + ("" if bans else " none"))
    for b in bans:
        print(f"  #{b.id} {b.scope} {b.ip} {_iso(b.started_at)} .. {_iso(b.ends_at)}"
              f"{' lifted' if b.lifted_at else ''}  {b.reason}")


async def cmd_key_add(store: Store, args: argparse.Namespace, settings: Settings) -> None:
    account_id = await _account_id(store, args.key)
    key = new_key()
    await store.add_key(account_id, key, time.time())
    print(key)


async def cmd_key_revoke(store: Store, args: argparse.Namespace, settings: Settings) -> None:
    if not await store.revoke_key(_key_arg(args.key), time.time()):
        raise CliError("no live key matches")
    print("revoked")


def _network(text: str) -> str:
    try:
        return str(ipaddress.ip_network(text.strip(), strict=False))
    except ValueError:
        raise CliError(f"not an IP address or CIDR range: {text!r}") from None


async def cmd_whitelist(store: Store, args: argparse.Namespace, settings: Settings) -> None:
    account_id = await _account_id(store, args.key)
    net = _network(args.network)
    if args.action == "add":
        changed = await store.whitelist_add(account_id, net)
    else:
        changed = await store.whitelist_remove(account_id, net)
        if not changed:
            raise CliError(f"{net} is not on the whitelist")
    print(f"{args.action} {net}" + ("" if changed else " (already there)"))


async def cmd_bans_list(store: Store, args: argparse.Namespace, settings: Settings) -> None:
    bans = await store.bans(time.time(), active_only=not args.all)
    if not bans:
        print("no bans")
    for b in bans:
        who = f"account {b.account_id} from {b.ip}" if b.account_id else f"ip {b.ip}"
        state = "lifted" if b.lifted_at else ("active" if b.ends_at > time.time() else "ended")
        print(f"#{b.id}\t{b.scope}\t{who}\t{_iso(b.started_at)}\t{_iso(b.ends_at)}\t{state}"
              f"\t{b.reason}")


async def cmd_bans_lift(store: Store, args: argparse.Namespace, settings: Settings) -> None:
    if not await store.lift_ban(args.ban_id, time.time(), "operator"):
        raise CliError(f"no ban #{args.ban_id} that is not already lifted")
    print(f"lifted #{args.ban_id}")


def _domain(text: str) -> str:
    domain = text.strip().rstrip(".").lower()
    if not domain or "/" in domain or " " in domain or ".." in domain:
        raise CliError(f"not a domain name: {text!r}")
    return domain


async def cmd_blocklist(store: Store, args: argparse.Namespace, settings: Settings) -> None:
    if args.action == "list":
        for d in await store.blocklist():
            print(d)
        return
    domain = _domain(args.domain or "")
    if args.action == "add":
        added = await store.blocklist_add(domain, time.time())
        print(f"blocked {domain}" + ("" if added else " (already listed)"))
    elif not await store.blocklist_remove(domain):
        raise CliError(f"{domain} is not on the blocklist")
    else:
        print(f"unblocked {domain}")


async def cmd_stats(store: Store, args: argparse.Namespace, settings: Settings) -> None:
    stats = await store.stats(time.time())
    lat = sorted(stats["solve_latencies_s"])
    summary = {
        "tasks": stats["tasks"],
        "solve_latency_s": {
            "count": len(lat),
            "p50": statistics.median(lat) if lat else None,
            "p95": lat[int(0.95 * (len(lat) - 1))] if lat else None,
        },
        "charges": {"count": stats["charges"]["count"],
                    "usd": usd_text(stats["charges"]["units"])},
        "refunds": {"count": stats["refunds"]["count"],
                    "usd": usd_text(stats["refunds"]["units"])},
    }
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print("tasks by type and state:")
    for row in summary["tasks"] or []:
        print(f"  {row['type']:<32} {row['state']:<8} {row['count']}")
    sl = summary["solve_latency_s"]
    if sl["count"]:
        print(f"solve latency: {sl['count']} solved, p50 {sl['p50']:.3f} s,"
              f" p95 {sl['p95']:.3f} s")
    else:
        print("solve latency: no solved tasks")
    print(f"charges: {summary['charges']['count']} totalling {summary['charges']['usd']} USD;"
          f" refunds: {summary['refunds']['count']} totalling {summary['refunds']['usd']} USD")


async def cmd_worker_token_create(store: Store, args: argparse.Namespace,
                                  settings: Settings) -> None:
    from capd.domain.catalogue import TASK_TYPES
    from capd.workers import new_worker_token, token_digest

    types = None
    if args.types:
        types = tuple(t.strip() for t in args.types.split(",") if t.strip())
        unknown = [t for t in types if t not in TASK_TYPES]
        if unknown or not types:
            raise CliError(f"unknown task type {unknown[0] if unknown else args.types!r}")
    token = new_worker_token()
    await store.create_worker_token(token_digest(token), args.name, types, time.time())
    print(f"worker token for {', '.join(types) if types else 'every task type'}")
    print(token)


async def cmd_worker_token_revoke(store: Store, args: argparse.Namespace,
                                  settings: Settings) -> None:
    from capd.workers import token_digest

    if not await store.revoke_worker_token(token_digest(args.token), time.time()):
        raise CliError("no live worker token matches")
    print("revoked")


def cmd_worker(args: argparse.Namespace, settings: Settings) -> None:
    import logging

    from capd.domain.tasks import ValidationRules
    from capd.solving.ocr import load_recogniser
    from capd.solving.pool import OcrPool
    from capd.solving.remote import RemoteOcrWorker, WorkerStopped

    urls = [u.strip() for given in args.url for u in given.split(",") if u.strip()]
    for url in urls:
        if not url.startswith(("http://", "https://")):
            raise CliError(f"not an http(s) URL: {url!r}")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # a line per request is noise
    pool = OcrPool(load_recogniser(args.engine or settings.ocr_engine),
                   args.threads or settings.ocr_threads)
    rules = ValidationRules(settings.min_image_bytes, settings.max_image_bytes,
                            settings.min_browser_major, settings.min_safari_major)
    worker = RemoteOcrWorker(urls, args.token, pool, rules)
    print(f"capd worker: {pool.size} OCR thread(s) leasing ImageToTextTask from"
          f" {', '.join(urls)}", flush=True)
    try:
        asyncio.run(worker.run())
    except WorkerStopped as exc:
        raise CliError(str(exc)) from None
    finally:
        pool.close()


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    import uvicorn

    from capd.api.app import create_app

    # migrate (and so reach the database) before serving: a bad URL is one clear line
    asyncio.run(_with_store(settings, lambda store, s: store.migrate()))
    if args.demo:
        key = asyncio.run(_with_store(settings, _ensure_demo))
        print(f"demo API key (balance {settings.demo_balance} USD): {key}", flush=True)
    app = create_app(settings)
    print(f"capd serving on http://{args.host}:{args.port} ({settings.database_url})",
          flush=True)
    # proxy_headers off: uvicorn would otherwise trust X-Forwarded-For from loopback peers;
    # capd applies its own trusted-proxy rule (spec §4) in ClientAddressMiddleware.
    uvicorn.run(app, host=args.host, port=args.port, loop="uvloop", http="httptools",
                access_log=False, log_level=args.log_level, lifespan="on",
                proxy_headers=False, server_header=False)


async def _ensure_demo(store: Store, settings: Settings) -> str:
    key = await store.meta_get(DEMO_KEY_META)
    if key and await store.caller_for_key(key):
        return key
    key = new_key()
    now = time.time()
    account_id = await store.create_account("demo", key, now)
    await store.adjust_balance(account_id, to_units(settings.demo_balance), "topup", "operator",
                               "demo balance", now)
    await store.meta_set(DEMO_KEY_META, key)
    return key


async def _with_store(settings: Settings,
                      fn: Callable[[Store, Settings], Awaitable[Any]]) -> Any:
    store = open_store(settings.database_url)
    try:
        await store.migrate()
        return await fn(store, settings)
    finally:
        await store.close()


# -- admin tokens for the web console (issue 16) --------------------------------------------
ADMIN_TOKEN_BYTES = 32  # 64 hex characters: never confused with a key (32) or worker token (48)


async def cmd_admin_token_create(store: Store, args: argparse.Namespace,
                                 settings: Settings) -> None:
    import hashlib
    import secrets

    token = secrets.token_hex(ADMIN_TOKEN_BYTES)
    token_id = await store.create_admin_token(hashlib.sha256(token.encode()).hexdigest(),
                                              args.name, time.time())
    print(f"admin token {token_id} ({args.name}) for /console/admin; shown once:")
    print(token)


async def cmd_admin_token_revoke(store: Store, args: argparse.Namespace,
                                 settings: Settings) -> None:
    import hashlib

    digest = hashlib.sha256(args.token.strip().encode()).hexdigest()
    if not await store.revoke_admin_token(digest, time.time()):
        raise CliError("no live admin token matches")
    print("revoked (its console sessions end with it)")


def _add_admin_token_parser(sub: Any) -> None:
    at = sub.add_parser("admin-token", help="tokens for the operator's web console").add_subparsers(
        dest="sub", required=True, parser_class=_Parser)
    a = at.add_parser("create", help="issue a token; prints it last")
    a.add_argument("--name", default="operator")
    a.set_defaults(fn=cmd_admin_token_create)
    a = at.add_parser("revoke", help="revoke a token (and end its sessions)")
    a.add_argument("token")
    a.set_defaults(fn=cmd_admin_token_revoke)


# -- parser ---------------------------------------------------------------------------------
def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="capd", description="Self-hosted captcha recognition service")
    p.add_argument("--db", help="database URL (sqlite:///path.db); default $CAPD_DATABASE_URL"
                   " or sqlite:///capd.db")
    p.add_argument("--config", help="TOML settings file (default $CAPD_CONFIG)")
    sub = p.add_subparsers(dest="command", required=True, parser_class=_Parser)

    s = sub.add_parser("serve", help="run the API server")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=8080)
    s.add_argument("--demo", action="store_true", help="ensure a demo account and print its key")
    s.add_argument("--log-level", default="warning",
                   choices=["critical", "error", "warning", "info", "debug"])

    sub.add_parser("migrate", help="apply schema migrations").set_defaults(fn=cmd_migrate)

    acc = sub.add_parser("account", help="accounts").add_subparsers(dest="sub", required=True,
                                                                     parser_class=_Parser)
    a = acc.add_parser("create", help="create an account; prints its key last")
    a.add_argument("--balance", default="0")
    a.add_argument("--name", default="account")
    a.set_defaults(fn=cmd_account_create)
    a = acc.add_parser("topup", help="add (or with a negative amount, remove) funds")
    a.add_argument("key")
    a.add_argument("amount")
    a.add_argument("--note", default="top-up")
    a.set_defaults(fn=cmd_account_topup)
    a = acc.add_parser("show", help="balance, keys, whitelist, ledger, bans")
    a.add_argument("key")
    a.set_defaults(fn=cmd_account_show)

    keys = sub.add_parser("key", help="API keys").add_subparsers(dest="sub", required=True,
                                                                 parser_class=_Parser)
    k = keys.add_parser("add", help="add a key to the account holding KEY; prints it")
    k.add_argument("key")
    k.set_defaults(fn=cmd_key_add)
    k = keys.add_parser("revoke", help="revoke a key")
    k.add_argument("key")
    k.set_defaults(fn=cmd_key_revoke)

    w = sub.add_parser("whitelist", help="IP whitelist of an account")
    w.add_argument("action", choices=["add", "remove"])
    w.add_argument("key")
    w.add_argument("network", metavar="IP_OR_CIDR")
    w.set_defaults(fn=cmd_whitelist)

    bans = sub.add_parser("bans", help="IP bans and account blocks").add_subparsers(
        dest="sub", required=True, parser_class=_Parser)
    b = bans.add_parser("list", help="active bans (--all: history too)")
    b.add_argument("--all", action="store_true")
    b.set_defaults(fn=cmd_bans_list)
    b = bans.add_parser("lift", help="lift a ban by its number")
    b.add_argument("ban_id", type=int)
    b.set_defaults(fn=cmd_bans_lift)

    bl = sub.add_parser("blocklist", help="domains whose tasks are refused")
    bl.add_argument("action", choices=["add", "remove", "list"])
    bl.add_argument("domain", nargs="?")
    bl.set_defaults(fn=cmd_blocklist)

    wt = sub.add_parser("worker-token", help="tokens for external workers").add_subparsers(
        dest="sub", required=True, parser_class=_Parser)
    w = wt.add_parser("create", help="issue a token; prints it last")
    w.add_argument("--types", help="comma-separated task types it may lease (default: all)")
    w.add_argument("--name", default="worker")
    w.set_defaults(fn=cmd_worker_token_create)
    w = wt.add_parser("revoke", help="revoke a token")
    w.add_argument("token")
    w.set_defaults(fn=cmd_worker_token_revoke)

    wk = sub.add_parser("worker", help="run the built-in OCR against a capd server")
    wk.add_argument("--url", required=True, action="append",
                    help="a capd API node, e.g. http://10.0.0.5:8080; repeat (or separate with"
                    " commas) to fail over between the nodes of one deployment")
    wk.add_argument("--token", required=True, help="a worker token (capd worker-token create)")
    wk.add_argument("--threads", type=int, default=0, help="OCR threads (default: cores)")
    wk.add_argument("--engine", help="recogniser engine (default: the ocr_engine setting)")

    st = sub.add_parser("stats", help="tasks by type and state, solve latency, charges")
    st.add_argument("--json", action="store_true")
    st.set_defaults(fn=cmd_stats)
    _add_admin_token_parser(sub)
    return p


def _safe_url(url: str) -> str:
    """A database URL without its password, for messages."""
    scheme, sep, rest = url.partition("://")
    if sep and "@" in rest:
        creds, _, host = rest.rpartition("@")
        user = creds.split(":", 1)[0]
        return f"{scheme}://{user}:***@{host}" if ":" in creds else url
    return url


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        overrides = {"database_url": args.db} if args.db else None
        settings = load_settings(args.config, os.environ, overrides)
        if args.command == "serve":
            cmd_serve(args, settings)
            return 0
        if args.command == "worker":
            cmd_worker(args, settings)
            return 0
        if args.command == "blocklist" and args.action != "list" and not args.domain:
            raise CliError("blocklist add/remove needs a DOMAIN")
        asyncio.run(_with_store(settings, lambda store, s: args.fn(store, args, s)))
        return 0
    except (CliError, ConfigError) as exc:
        print(f"capd: error: {exc}", file=sys.stderr)
        return 1
    except (sqlite3.Error, OSError) as exc:
        print(f"capd: error: database {_safe_url(settings.database_url)}: {exc}",
              file=sys.stderr)
        return 1
    except Exception as exc:  # a driver's own errors (e.g. asyncpg's), never a traceback
        if type(exc).__module__.split(".")[0] not in ("asyncpg",):
            raise
        print(f"capd: error: database {_safe_url(settings.database_url)}:"
              f" {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into a command that stopped reading
        sys.stderr.close()
        return 1
