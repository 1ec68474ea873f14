"""Poll limits, bans and blocks (spec §4): the tallies and bans kept in the store, judged
by the pure rules of ``capd.domain.limits``.

Bans, blocks and their tallies are kept under ``ban_key(ip)``: the address for IPv4, its
/64 network for IPv6. A ban is stored (reason, scope, start, end) so operators and
account owners can see it and lift it; the tallies that lead to one are windowed
counters. Times come from the injected clock.
"""

from __future__ import annotations

from collections.abc import Callable

from capd.domain.limits import (
    ACCOUNT_IP_SCOPE,
    IP_SCOPE,
    TOO_MANY_POLLS,
    UNKNOWN_KEYS,
    LimitRules,
    PollVerdict,
    ban_ends_at,
    ban_key,
    bans_ip,
    blocks_account_ip,
    poll_refusal,
    poll_verdict,
)
from capd.errors import CapdError
from capd.store.base import Store


class Policy:
    """Decides bans, blocks and poll refusals; raises the matching CapdError."""

    def __init__(self, store: Store, rules: LimitRules, clock: Callable[[], float]) -> None:
        self.store = store
        self.rules = rules
        self.clock = clock

    async def check_ip_ban(self, ip: str, key_known: bool) -> None:
        """ERROR_IP_BANNED while the IP is banned; unknown keys sent meanwhile extend it."""
        ban = await self.store.active_ban(IP_SCOPE, ban_key(ip), None, self.clock())
        if ban is None:
            return
        if not key_known:
            await self.note_unknown_key(ip)
        raise CapdError("ERROR_IP_BANNED")

    async def note_unknown_key(self, ip: str) -> None:
        """Count an unknown-key request; at the threshold, ban (or extend the ban of) the IP."""
        now = self.clock()
        ip = ban_key(ip)
        count = await self.store.incr_counter(f"unknown-key:{ip}", self.rules.violation_window_s,
                                              now)
        if bans_ip(count, self.rules):
            await self._ban(IP_SCOPE, ip, None, UNKNOWN_KEYS, now)

    async def check_account_block(self, account_id: int, ip: str) -> None:
        """ERROR_IP_BLOCKED while this account is blocked from this IP; requests meanwhile
        count as continued violations and extend the block."""
        block = await self.store.active_ban(ACCOUNT_IP_SCOPE, ban_key(ip), account_id,
                                            self.clock())
        if block is None:
            return
        await self.note_violation(account_id, ip, block.reason)
        raise CapdError("ERROR_IP_BLOCKED")

    async def note_violation(self, account_id: int, ip: str, reason: str) -> None:
        """Count a violation by an account from an IP; at the threshold, block the pair."""
        now = self.clock()
        ip = ban_key(ip)
        count = await self.store.incr_counter(f"violation:{account_id}:{ip}",
                                              self.rules.violation_window_s, now)
        if blocks_account_ip(count, self.rules):
            await self._ban(ACCOUNT_IP_SCOPE, ip, account_id, reason, now)

    async def _ban(self, scope: str, ip: str, account_id: int | None, reason: str,
                   now: float) -> None:
        # one call: the store starts the ban or extends the slot's active one atomically
        await self.store.add_ban(scope, ip, account_id, reason, now,
                                 ban_ends_at(now, self.rules))

    async def check_proxy_checks(self, account_id: int, limit: int, window_s: float) -> None:
        """Count a proxy pre-flight of an account; past ``limit`` per ``window_s``,
        ERROR_TOO_MUCH_REQUESTS (no connection is made)."""
        count = await self.store.incr_counter(f"proxy-check:{account_id}", window_s,
                                              self.clock())
        if count > limit:
            raise CapdError("ERROR_TOO_MUCH_REQUESTS",
                            f"more than {limit} proxy checks in {window_s:g} s")

    async def check_poll(self, task_id: int, account_id: int, ip: str) -> None:
        """Count a poll of a task; ERROR_TOO_MUCH_REQUESTS past the total (a violation) or
        the per-second rate."""
        r = self.rules
        now = self.clock()
        # one round trip for both tallies: the poll path is the hot path
        polls, rate = await self.store.incr_counters(
            [(f"polls:{task_id}", r.poll_window_s), (f"rate:{task_id}:{int(now)}", 1.0)], now)
        verdict = poll_verdict(polls, rate, r)
        if verdict == PollVerdict.ALLOWED:
            return
        if verdict == PollVerdict.TOO_MANY:
            await self.note_violation(account_id, ip, TOO_MANY_POLLS)
        raise poll_refusal(verdict, r)
