"""Operator commands: parse arguments, call the admin service (``capd.admin``), print.

Every command takes its database from ``--db URL``, else ``CAPD_DATABASE_URL``, else
``sqlite:///capd.db`` in the working directory. Only ``serve``, ``migrate`` and ``account
create`` may create a SQLite file; the others refuse a path where none exists. Bad input
prints one line on stderr and exits non-zero.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import os
import shlex
import sys
import time
from collections.abc import Awaitable, Callable
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

from capd.admin import (
    AdminError,
    AdminService,
    DemoAccount,
    domain_text,
    is_account_id,
    network_text,
    task_types,
    units_of,
)
from capd.api.protocol import guarded
from capd.config import Settings, load_settings
from capd.domain.money import parse_amount, usd_text
from capd.errors import ConfigError
from capd.store import is_database_error, open_store, sqlite_path

if TYPE_CHECKING:
    import uvicorn


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


ACCOUNT_REF_HELP = "an API key of the account (live or revoked), or the account's number"


# -- commands (each gets the admin service of an open, migrated store) ------------------------
Command = Callable[[AdminService, argparse.Namespace], Awaitable[None]]


async def cmd_migrate(admin: AdminService, args: argparse.Namespace) -> None:
    print(f"schema version {await admin.migrate()}")


async def cmd_account_create(admin: AdminService, args: argparse.Namespace) -> None:
    amount = _amount(args.balance)
    created = await admin.create_account(args.name, amount)
    print(f"account {created.account_id} ({args.name}) balance {usd_text(units_of(amount))} USD")
    print(created.key)


async def cmd_account_topup(admin: AdminService, args: argparse.Namespace) -> None:
    amount = _amount(args.amount)
    account_id = await admin.account_id_for(args.key)
    balance = await admin.adjust(account_id, amount, args.note)
    print(f"balance {balance:f} USD")


async def cmd_account_show(admin: AdminService, args: argparse.Namespace) -> None:
    view = await admin.account_view(await admin.account_id_for(args.key), ledger_limit=10)
    account = view.account
    print(f"account {account.id} ({account.name}) created {_iso(account.created_at)}")
    print(f"balance {view.balance:f} USD, reserved {view.reserved:f} USD,"
          f" available {view.available:f} USD")
    print("keys:")  # a hint and an id each: the store keeps no key (capd.store.secrets)
    for k in view.keys:
        state = f"revoked {_iso(k.revoked_at)}" if k.revoked_at else "live"
        print(f"  {k.hint}…  id {k.key_id}  created {_iso(k.created_at)}  {state}")
    print("whitelist: " + (", ".join(view.whitelist) if view.whitelist else "(any address)"))
    print("recent ledger:")
    for e in view.ledger:
        task = f" task {e.task_id}" if e.task_id else ""
        print(f"  {_iso(e.at)}  {e.kind:<10} {usd_text(e.amount_units):>14}  {e.actor}{task}"
              f"  {e.note}")
    print("bans:" + ("" if view.bans else " none"))
    for b in view.bans:
        print(f"  #{b.id} {b.scope} {b.ip} {_iso(b.started_at)} .. {_iso(b.ends_at)}"
              f"{' lifted' if b.lifted_at else ''}  {b.reason}")


async def cmd_account_find(admin: AdminService, args: argparse.Namespace) -> None:
    accounts = await admin.find_accounts(args.query, args.limit)
    if not accounts:
        print("no accounts match")
    for a in accounts:
        print(f"{a.id}\t{a.name}\t{usd_text(a.balance_units)} USD"
              f"\treserved {usd_text(a.reserved_units)} USD\tcreated {_iso(a.created_at)}")


async def cmd_key_add(admin: AdminService, args: argparse.Namespace) -> None:
    print(await admin.add_key(await admin.account_id_for(args.key)))


async def cmd_key_revoke(admin: AdminService, args: argparse.Namespace) -> None:
    if not await admin.revoke_key(args.key):
        raise CliError("no live key matches")
    print("revoked")


async def cmd_key_rotate(admin: AdminService, args: argparse.Namespace) -> None:
    if is_account_id(args.key):
        print(await admin.rotate_account_keys(await admin.account_id_for(args.key)))
    else:
        print(await admin.rotate_key(await admin.account_id_for_key(args.key), args.key))


async def cmd_whitelist(admin: AdminService, args: argparse.Namespace) -> None:
    account_id = await admin.account_id_for(args.key)
    net = network_text(args.network)
    if args.action == "add":
        changed = await admin.whitelist_add(account_id, net)
    else:
        changed = await admin.whitelist_remove(account_id, net)
        if not changed:
            raise CliError(f"{net} is not on the whitelist")
    print(f"{args.action} {net}" + ("" if changed else " (already there)"))


async def cmd_bans_list(admin: AdminService, args: argparse.Namespace) -> None:
    bans = await admin.bans(active_only=not args.all)
    if not bans:
        print("no bans")
    now = admin.clock()
    for b in bans:
        who = f"account {b.account_id} from {b.ip}" if b.account_id else f"ip {b.ip}"
        state = "lifted" if b.lifted_at else ("active" if b.ends_at > now else "ended")
        print(f"#{b.id}\t{b.scope}\t{who}\t{_iso(b.started_at)}\t{_iso(b.ends_at)}\t{state}"
              f"\t{b.reason}")


async def cmd_bans_lift(admin: AdminService, args: argparse.Namespace) -> None:
    if not await admin.lift_ban(args.ban_id):
        raise CliError(f"no ban #{args.ban_id} that is not already lifted")
    print(f"lifted #{args.ban_id}")


async def cmd_blocklist(admin: AdminService, args: argparse.Namespace) -> None:
    if args.action == "list":
        for d in await admin.blocklist():
            print(d)
        return
    domain = domain_text(args.domain or "")
    if args.action == "add":
        added = await admin.blocklist_add(domain)
        print(f"blocked {domain}" + ("" if added else " (already listed)"))
    elif not await admin.blocklist_remove(domain):
        raise CliError(f"{domain} is not on the blocklist")
    else:
        print(f"unblocked {domain}")


async def cmd_stats(admin: AdminService, args: argparse.Namespace) -> None:
    summary = await admin.stats()
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
    cb = summary["callbacks"]
    print(f"callbacks: {cb['pending']} pending, {cb['failed']} failed")


async def cmd_prune(admin: AdminService, args: argparse.Namespace) -> None:
    pruned = await admin.prune()
    if args.json:
        print(json.dumps(dataclasses.asdict(pruned), indent=2))
        return
    print(f"dropped {pruned.payloads_dropped} payloads, deleted {pruned.tasks_deleted} tasks,"
          f" reclaimed {pruned.bytes_reclaimed} bytes")


async def cmd_worker_token_create(admin: AdminService, args: argparse.Namespace) -> None:
    types = task_types(tuple(args.types.split(","))) if args.types else None
    token = await admin.create_worker_token(args.name, types)
    print(f"worker token for {', '.join(types) if types else 'every task type'}")
    print(token)


async def cmd_worker_token_revoke(admin: AdminService, args: argparse.Namespace) -> None:
    if not await admin.revoke_worker_token(args.token):
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
    from capd.modules.engine import with_modules
    from capd.modules.library import default_dir

    recogniser = with_modules(load_recogniser(args.engine or settings.ocr_engine),
                              settings.modules_dir or default_dir(settings.database_url),
                              settings.modules_poll_s)
    pool = OcrPool(recogniser, args.threads or settings.ocr_threads)
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


def _base_url(host: str, port: int) -> str:
    """A URL a local client can use for ``host:port`` (a wildcard bind means loopback)."""
    if host in ("0.0.0.0", ""):
        host = "127.0.0.1"
    elif host == "::":
        host = "::1"
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{port}"


def _cli_hint() -> str:
    """How the operator runs this CLI again: the script's path (``.venv/bin/capd`` under
    ``./run``) relative to here, or ``python -m capd``."""
    script = Path(sys.argv[0]) if sys.argv and sys.argv[0] else None
    if script is None or script.name != "capd":
        return f"{Path(sys.executable).name} -m capd"
    try:
        return str(script.resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(script)


def serve_banner(url: str, database_url: str, demo_key: str | None, cli: str,
                 demo_account: int | None = None) -> str:
    """What ``capd serve`` prints once it answers requests: where, and what to try next."""
    lines = [
        f"capd serving on {url} ({_safe_url(database_url)})",
        "next steps:",
        f"  curl -s {url}/getBalance -d '{{\"clientKey\":\"{demo_key or '<key>'}\"}}'",
        "  solve the sample captcha: the quick start in README.md (examples/sample.png)",
        f"  the API: README.md and docs/; machine-readable: {url}/openapi.json",
        f"  operator CLI: {cli} --help   (e.g. {cli} account create --balance 5)",
    ]
    if demo_key is None and demo_account is not None:
        lines.insert(2, f"  a fresh demo key: {cli} key rotate {demo_account}")
    elif demo_key is None:
        lines.insert(2, f"  no key yet: {cli} account create --balance 5 prints one")
    return "\n".join(lines)


def demo_lines(demo: DemoAccount, balance: Decimal, cli: str) -> str:
    """What ``capd serve --demo`` says of its account: the key when it was just made (the
    only time it can be shown: the store keeps its digest), else how to get a fresh one."""
    if demo.key is not None:
        return (f"demo API key (balance {balance} USD): {demo.key}\n"
                f"  shown once: capd keeps only its digest")
    return (f"demo account {demo.account_id} exists; its key was shown when it was made"
            f" (capd keeps only its digest).\n"
            f"  a fresh key (its other keys stop working): {cli} key rotate {demo.account_id}")


def cmd_serve(args: argparse.Namespace, settings: Settings) -> None:
    import uvicorn

    from capd.api.app import create_app

    # migrate (and so reach the database) before serving: a bad URL is one clear line
    asyncio.run(_with_admin(settings, lambda admin: admin.migrate()))
    demo_key, demo_account = None, None
    cli = _cli_hint()  # the same database and settings as this server
    cli += f" --db {shlex.quote(_safe_url(args.db))}" if args.db else ""
    cli += f" --config {shlex.quote(args.config)}" if args.config else ""
    if args.demo:
        demo: DemoAccount = asyncio.run(_with_admin(
            settings, lambda admin: admin.ensure_demo_account(settings.demo_balance)))
        demo_key, demo_account = demo.key, demo.account_id
        print(demo_lines(demo, settings.demo_balance, cli), flush=True)
    app = create_app(settings)
    banner = serve_banner(_base_url(args.host, args.port), settings.database_url, demo_key,
                          cli, demo_account)

    class Server(uvicorn.Server):
        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:  # listening, and the app's start-up (migrations, OCR) is done
                print(banner, flush=True)

    server = Server(server_config(app, settings, args.host, args.port, args.log_level))
    with contextlib.suppress(KeyboardInterrupt):
        server.run()
    if not server.started:
        sys.exit(3)  # uvicorn's STARTUP_FAILURE, as uvicorn.run would


def server_config(app: Any, settings: Settings, host: str, port: int, log_level: str
                  ) -> uvicorn.Config:
    """uvicorn's configuration for ``capd serve``."""
    import uvicorn

    # proxy_headers off: uvicorn would otherwise trust X-Forwarded-For from loopback peers;
    # capd applies its own trusted-proxy rule (spec §4) in ClientAddressMiddleware.
    return uvicorn.Config(app, host=host, port=port, loop="uvloop",
                          http=guarded("httptools", settings.header_read_timeout_s),
                          timeout_keep_alive=max(1, round(settings.keep_alive_s)),
                          access_log=False, log_level=log_level,
                          lifespan="on", proxy_headers=False, server_header=False)


async def _with_admin(settings: Settings, fn: Callable[[AdminService], Awaitable[Any]]) -> Any:
    store = open_store(settings.database_url)
    try:
        await store.migrate()
        return await fn(AdminService(store, time.time, settings))
    finally:
        await store.close()


# -- admin tokens for the web console (issue 16) --------------------------------------------
async def cmd_admin_token_create(admin: AdminService, args: argparse.Namespace) -> None:
    from capd.console.tokens import create_admin_token

    token_id, token = await create_admin_token(admin.store, admin.clock, args.name)
    print(f"admin token {token_id} ({args.name}) for /console/admin; shown once:")
    print(token)


async def cmd_admin_token_revoke(admin: AdminService, args: argparse.Namespace) -> None:
    from capd.console.tokens import revoke_admin_token

    if not await revoke_admin_token(admin.store, admin.clock, args.token):
        raise CliError("no live admin token matches")
    print("revoked (its console sessions end with it)")


def _add_admin_token_parser(sub: Any) -> None:
    at = sub.add_parser("admin-token", help="tokens for the operator's web console"
                        ).add_subparsers(dest="sub", required=True, parser_class=_Parser)
    a = at.add_parser("create", help="issue a token; prints it last")
    a.add_argument("--name", default="operator")
    a.set_defaults(fn=cmd_admin_token_create)
    a = at.add_parser("revoke", help="revoke a token (and end its sessions)")
    a.add_argument("token")
    a.set_defaults(fn=cmd_admin_token_revoke)


def _require_database(url: str) -> None:
    """Refuse a SQLite URL whose file does not exist: opening it would create an empty
    database, and the command would then act on nothing (a typo, or the wrong directory)."""
    if not url.startswith("sqlite://"):
        return
    path = sqlite_path(url)
    if path != ":memory:" and not os.path.exists(path):
        raise CliError(f"no database at {os.path.abspath(path)}: run `capd serve` or"
                       " `capd migrate` first, or pass --db")


# -- backup: its subparser and handler, one block ------------------------------------------
def add_backup_parser(sub: Any) -> None:
    b = sub.add_parser("backup", help="copy the SQLite database consistently, also while"
                       " capd serves (PostgreSQL: use pg_dump)")
    b.add_argument("file", help="the copy to create: a new file, made owner-only (0600)")


def cmd_backup(args: argparse.Namespace, settings: Settings) -> None:
    from capd.store.backup import BackupError, backup_database

    try:
        result = backup_database(settings.database_url, args.file)
    except BackupError as exc:
        raise CliError(str(exc)) from None
    print(f"backed up {result.source} to {result.target}"
          f" ({result.pages} pages, {result.size_bytes} bytes)")


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
    s.add_argument("--demo", action="store_true",
                   help="ensure a demo account; prints its key when it is made")
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
    a.add_argument("key", metavar="KEY|ID", help=ACCOUNT_REF_HELP)
    a.add_argument("amount")
    a.add_argument("--note", default="top-up")
    a.set_defaults(fn=cmd_account_topup)
    a = acc.add_parser("show", help="balance, keys (hints), whitelist, ledger, bans")
    a.add_argument("key", metavar="KEY|ID", help=ACCOUNT_REF_HELP)
    a.set_defaults(fn=cmd_account_show)
    a = acc.add_parser("find", help="accounts by id, name (substring) or key")
    a.add_argument("query")
    a.add_argument("--limit", type=int, default=50)
    a.set_defaults(fn=cmd_account_find)

    keys = sub.add_parser("key", help="API keys").add_subparsers(dest="sub", required=True,
                                                                 parser_class=_Parser)
    k = keys.add_parser("add", help="add a key to the account (holding KEY, or number ID);"
                        " prints it")
    k.add_argument("key", metavar="KEY|ID", help=ACCOUNT_REF_HELP)
    k.set_defaults(fn=cmd_key_add)
    k = keys.add_parser("revoke", help="revoke a key")
    k.add_argument("key", metavar="KEY|KEY_ID",
                   help="the key, or its id as `account show` lists it")
    k.set_defaults(fn=cmd_key_revoke)
    k = keys.add_parser("rotate", help="replace KEY (or with an account ID, every live key of"
                        " that account) by a new key; prints it")
    k.add_argument("key", metavar="KEY|ID", help=ACCOUNT_REF_HELP)
    k.set_defaults(fn=cmd_key_rotate)

    w = sub.add_parser("whitelist", help="IP whitelist of an account")
    w.add_argument("action", choices=["add", "remove"])
    w.add_argument("key", metavar="KEY|ID", help=ACCOUNT_REF_HELP)
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
    pr = sub.add_parser("prune", help="apply retention now (payload_retention_s,"
                        " task_retention_s) and give the space back; prints what went")
    pr.add_argument("--json", action="store_true")
    pr.set_defaults(fn=cmd_prune)
    add_backup_parser(sub)
    _add_admin_token_parser(sub)
    # -- custom recognition modules (capd/modules/cli.py; they open no database) --
    from capd.modules.cli import add_parser as add_module_parser

    add_module_parser(sub, _Parser)
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
        if args.command == "module":  # custom modules live in a directory, not the store
            from capd.modules.cli import ModuleCliError
            from capd.modules.cli import run as run_module_command

            try:
                run_module_command(args, settings)
            except ModuleCliError as exc:
                raise CliError(str(exc)) from None
            return 0
        if args.command == "backup":  # opens no Store: it copies the file beneath one
            cmd_backup(args, settings)
            return 0
        if args.command == "blocklist" and args.action != "list" and not args.domain:
            raise CliError("blocklist add/remove needs a DOMAIN")
        creates = args.command == "migrate" or (args.command, getattr(args, "sub", None)) == (
            "account", "create")
        if not creates:
            _require_database(settings.database_url)
        command: Command = args.fn
        asyncio.run(_with_admin(settings, lambda admin: command(admin, args)))
        return 0
    except (CliError, ConfigError, AdminError) as exc:
        print(f"capd: error: {exc}", file=sys.stderr)
        return 1
    except Exception as exc:  # a database driver's errors: one line, never a traceback
        if not is_database_error(exc):
            raise
        named = type(exc).__module__.startswith("asyncpg")  # its messages lack the kind
        detail = f"{type(exc).__name__}: {exc}" if named else str(exc)
        print(f"capd: error: database {_safe_url(settings.database_url)}: {detail}",
              file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # output piped into a command that stopped reading
        sys.stderr.close()
        return 1
