"""The operator's actions, written once above the Store and below the front ends.

The CLI (``capd/cli.py``) and any console call an ``AdminService``; it validates what an
operator typed, applies the rule, and calls the store's atomic primitives. Money is
Decimal USD at this surface and integer units (``capd.domain.money``) below it. Every
refusal is an ``AdminError`` whose message is one line fit to show the operator.
"""

from __future__ import annotations

import ipaddress
import statistics
from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from capd.config import Settings
from capd.constants import KEY_ID_CHARS
from capd.domain.catalogue import TASK_TYPES
from capd.domain.hosts import normalise_host
from capd.domain.keys import is_key, new_key
from capd.domain.money import MAX_UNITS, from_units, to_units, usd_text
from capd.errors import InsufficientFunds
from capd.service.retention import Pruned, prune_all
from capd.store.base import Account, Ban, KeyRecord, LedgerEntry, Store
from capd.store.secrets import secret_digest

DEMO_ACCOUNT_META = "demo_account"  # meta row naming the account `capd serve --demo` made
OPERATOR = "operator"


class AdminError(Exception):
    """Raised when an operator action cannot be done; the message is one line for them."""


class InvalidInput(AdminError):
    """Raised when an argument (amount, key, network, domain, task type) is malformed or
    outside what capd supports."""


class NotFound(AdminError):
    """Raised when the account or key an action names does not exist."""


class InsufficientBalance(AdminError):
    """Raised when an adjustment would take a balance below what running tasks reserve."""


@dataclass(frozen=True)
class NewAccount:
    account_id: int
    key: str  # shown once: the store keeps only its digest and hint (capd.store.secrets)


@dataclass(frozen=True)
class DemoAccount:
    """The demo account of ``capd serve --demo``: ``key`` only when it was made just now
    (a key is shown once; later starts name the account instead)."""

    account_id: int
    key: str | None


@dataclass(frozen=True)
class AccountView:
    """Everything an operator looks at for one account."""

    account: Account
    balance: Decimal
    reserved: Decimal
    available: Decimal
    keys: list[KeyRecord]
    whitelist: list[str]
    ledger: list[LedgerEntry]  # newest first
    bans: list[Ban]  # history included


# -- validation of what an operator types ------------------------------------------------------
def units_of(amount: Decimal) -> int:
    """A USD amount as storage units; InvalidInput when it is not finite, has more than 8
    decimals or lies outside the supported range."""
    if not amount.is_finite():
        raise InvalidInput(f"not a finite amount in USD: {amount}")
    try:
        units = to_units(amount)
    except ValueError:
        raise InvalidInput(f"amount {amount} has more than 8 decimal places") from None
    if abs(units) > MAX_UNITS:
        raise InvalidInput(f"amount {amount} USD is outside the supported range")
    return units


def check_key(key: str) -> str:
    """``key`` when it is an API key's shape (32 lowercase hex characters)."""
    if not is_key(key):
        raise InvalidInput(f"not an API key (32 lowercase hex characters): {key!r}")
    return key


def is_key_id(text: str) -> bool:
    """Whether ``text`` is a key's id as ``capd account show`` prints it (16 hex)."""
    return len(text) == KEY_ID_CHARS and all(c in "0123456789abcdef" for c in text)


def is_account_id(text: str) -> bool:
    """Whether an operator's account reference is an account id rather than a key."""
    return text.isascii() and text.isdigit() and len(text) < 19


def network_text(text: str) -> str:
    """An IP address or CIDR range in its normal form (``10.1.2.3/8`` -> ``10.0.0.0/8``,
    a bare address -> a /32 or /128)."""
    try:
        return str(ipaddress.ip_network(text.strip(), strict=False))
    except ValueError:
        raise InvalidInput(f"not an IP address or CIDR range: {text!r}") from None


def domain_text(text: str) -> str:
    """A domain name in its normal form (``capd.domain.hosts.normalise_host``: IDNA-mapped,
    percent-decoded, lower case, no trailing dot), the form tasks' hosts are compared in."""
    domain = normalise_host(text.strip()) if "/" not in text else None
    if domain is None:
        raise InvalidInput(f"not a domain name: {text!r}")
    return domain


def task_types(types: tuple[str, ...] | None) -> tuple[str, ...] | None:
    """Task type names checked against the catalogue (None: every type)."""
    if types is None:
        return None
    cleaned = tuple(dict.fromkeys(t.strip() for t in types if t.strip()))
    if not cleaned:
        raise InvalidInput("no task type named (leave the types out to allow every type)")
    unknown = [t for t in cleaned if t not in TASK_TYPES]
    if unknown:
        raise InvalidInput(f"unknown task type {unknown[0]!r}")
    return cleaned


# -- the service ---------------------------------------------------------------------------------
class AdminService:
    """The operator's actions on one store; ``clock`` returns UTC unix seconds."""

    def __init__(self, store: Store, clock: Callable[[], float], settings: Settings) -> None:
        self.store = store
        self.clock = clock
        self.settings = settings

    async def migrate(self) -> int:
        """Apply pending schema migrations; returns the schema version in force."""
        return await self.store.migrate()

    # accounts
    async def create_account(self, name: str = "", balance: Decimal = Decimal(0),
                             note: str = "") -> NewAccount:
        """Create an account with a fresh key, funded with ``balance`` in the same
        transaction (a ``topup`` ledger row, noted "opening balance" unless ``note``)."""
        units = units_of(balance)
        if units < 0:
            raise InvalidInput("the opening balance cannot be negative")
        key = new_key()
        account_id = await self.store.create_account(
            name, key, self.clock(), opening_units=units, actor=OPERATOR,
            note=note or "opening balance")
        return NewAccount(account_id, key)

    async def ensure_demo_account(self, balance: Decimal) -> DemoAccount:
        """The demo account, created (once) with ``balance``; its key is returned only on
        creation, since the store keeps none. The meta table names the account, not a key.
        A demo account whose keys are all revoked is left as it is: ``capd key rotate ID``
        gives it a fresh key."""
        known = await self.store.meta_get(DEMO_ACCOUNT_META)
        if known and known.isdigit() and await self.store.account(int(known)) is not None:
            return DemoAccount(int(known), None)
        created = await self.create_account("demo", balance, note="demo balance")
        await self.store.meta_set(DEMO_ACCOUNT_META, str(created.account_id))
        return DemoAccount(created.account_id, created.key)

    async def account_id_for_key(self, key: str) -> int:
        """The account a key (live or revoked) belongs to."""
        account = await self.store.account_for_key(check_key(key))
        if account is None:
            raise NotFound("no account holds that key")
        return account.id

    async def account_id_for(self, ref: str) -> int:
        """The account an operator names: by id, or by a key (live or revoked) it holds."""
        if is_account_id(ref):
            return (await self._account(int(ref))).id
        return await self.account_id_for_key(ref)

    async def _account(self, account_id: int) -> Account:
        account = await self.store.account(account_id)
        if account is None:
            raise NotFound(f"no account {account_id}")
        return account

    async def account_view(self, account_id: int, ledger_limit: int = 20) -> AccountView:
        account = await self._account(account_id)
        return AccountView(
            account=account,
            balance=from_units(account.balance_units),
            reserved=from_units(account.reserved_units),
            available=from_units(account.balance_units - account.reserved_units),
            keys=await self.store.keys(account_id),
            whitelist=await self.store.whitelist(account_id),
            ledger=await self.store.ledger(account_id, ledger_limit),
            bans=await self.store.bans(self.clock(), active_only=False, account_id=account_id),
        )

    async def find_accounts(self, query: str, limit: int = 50) -> list[Account]:
        """Accounts by id, name substring (any case) or exact key (live or revoked; the
        store matches its digest)."""
        return await self.store.find_accounts(query, limit)

    async def adjust(self, account_id: int, amount: Decimal, note: str,
                     actor: str = OPERATOR) -> Decimal:
        """Move the balance by ``amount`` (positive: a ``topup``, negative: an
        ``adjustment``) with a ledger row; returns the new balance."""
        units = units_of(amount)
        if units == 0:
            raise InvalidInput("a top-up of zero changes nothing")
        await self._account(account_id)
        kind = "topup" if units > 0 else "adjustment"
        try:
            balance = await self.store.adjust_balance(account_id, units, kind, actor, note,
                                                      self.clock())
        except InsufficientFunds:
            raise InsufficientBalance(
                "that would take the balance below what running tasks reserve") from None
        except ValueError as exc:  # past MAX_UNITS
            raise InvalidInput(str(exc)) from None
        return from_units(balance)

    # keys
    async def add_key(self, account_id: int) -> str:
        """A new live key for the account; returns it (shown once: the store keeps only its
        digest and hint)."""
        await self._account(account_id)
        key = new_key()
        await self.store.add_key(account_id, key, self.clock())
        return key

    async def revoke_key(self, key: str) -> bool:
        """Revoke a live key, named by the key or by its id (``capd account show``);
        False when it is unknown or already revoked."""
        if is_key_id(key):
            found = await self.store.keys_by_id(key)
            if len(found) > 1:  # a shared 64-bit prefix: all but impossible; never guess
                raise InvalidInput(f"{len(found)} keys have the id {key}: name the key")
            return bool(found) and await self.store.revoke_key_digest(found[0].digest,
                                                                      self.clock())
        return await self.store.revoke_key(check_key(key), self.clock())

    async def rotate_key(self, account_id: int, old_key: str) -> str:
        """Add a new key to the account and revoke ``old_key`` (a live key of that account);
        returns the new key. The new key exists before the old one stops working."""
        check_key(old_key)
        return await self.rotate_key_digest(account_id, secret_digest(old_key))

    async def rotate_key_digest(self, account_id: int, digest: str) -> str:
        """``rotate_key`` for the live key of the account with this digest (the console
        names keys by digest: it never holds one)."""
        live = {k.digest: k for k in await self.store.keys(account_id) if k.revoked_at is None}
        if digest not in live:
            await self._account(account_id)
            raise NotFound(f"account {account_id} holds no such live key")
        key = await self.add_key(account_id)
        await self.store.revoke_key_digest(digest, self.clock())
        return key

    async def rotate_account_keys(self, account_id: int) -> str:
        """A new key for the account, every other live key of it revoked; returns the new
        key (how an operator who holds none of the account's keys hands out a fresh one)."""
        old = [k.digest for k in await self.store.keys(account_id) if k.revoked_at is None]
        key = await self.add_key(account_id)
        for digest in old:
            await self.store.revoke_key_digest(digest, self.clock())
        return key

    # whitelist
    async def whitelist_add(self, account_id: int, network: str) -> bool:
        """Allow the account's keys from ``network``; False when already listed."""
        net = network_text(network)
        await self._account(account_id)
        return await self.store.whitelist_add(account_id, net)

    async def whitelist_remove(self, account_id: int, network: str) -> bool:
        """Unlist ``network``; False when it was not listed."""
        net = network_text(network)
        await self._account(account_id)
        return await self.store.whitelist_remove(account_id, net)

    # bans
    async def bans(self, active_only: bool = True, account_id: int | None = None) -> list[Ban]:
        return await self.store.bans(self.clock(), active_only=active_only,
                                     account_id=account_id)

    async def lift_ban(self, ban_id: int, by: str = OPERATOR) -> bool:
        """Lift a ban now; False when there is no such ban or it is already lifted."""
        return await self.store.lift_ban(ban_id, self.clock(), by)

    # blocklist
    async def blocklist_add(self, domain: str) -> bool:
        """Refuse tasks for ``domain`` and its subdomains; False when already listed."""
        return await self.store.blocklist_add(domain_text(domain), self.clock())

    async def blocklist_remove(self, domain: str) -> bool:
        return await self.store.blocklist_remove(domain_text(domain))

    async def blocklist(self) -> list[str]:
        return await self.store.blocklist()

    # worker tokens
    async def create_worker_token(self, name: str, types: tuple[str, ...] | None) -> str:
        """A new worker token for ``types`` (None: every type); returns it (shown once:
        the store keeps only its digest)."""
        from capd.workers import new_worker_token, token_digest  # the worker desk is heavy

        allowed = task_types(types)
        token = new_worker_token()
        await self.store.create_worker_token(token_digest(token), name, allowed, self.clock())
        return token

    async def revoke_worker_token(self, token: str) -> bool:
        """Revoke a live worker token; False when it is unknown or already revoked."""
        from capd.workers import token_digest

        return await self.store.revoke_worker_token(token_digest(token.strip()), self.clock())

    # retention
    async def prune(self) -> Pruned:
        """Apply retention now, in full (batched), and give the freed space back."""
        return await prune_all(self.store, self.settings, self.clock())

    # views
    async def stats(self) -> dict[str, Any]:
        """Tasks by type and state, solve latency (count, p50, p95 in seconds) and the
        charges and refunds (count, USD text); JSON-ready."""
        raw = await self.store.stats(self.clock())
        callbacks = await self.store.callback_counts()
        lat = sorted(raw["solve_latencies_s"])
        return {
            "tasks": raw["tasks"],
            "solve_latency_s": {
                "count": len(lat),
                "p50": statistics.median(lat) if lat else None,
                "p95": lat[int(0.95 * (len(lat) - 1))] if lat else None,
            },
            "charges": {"count": raw["charges"]["count"],
                        "usd": usd_text(raw["charges"]["units"])},
            "refunds": {"count": raw["refunds"]["count"],
                        "usd": usd_text(raw["refunds"]["units"])},
            # the callback outbox: waiting (or retrying), and given up
            "callbacks": {"pending": callbacks["pending"], "failed": callbacks["failed"]},
        }
