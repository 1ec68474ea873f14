"""Poll limits and ban rules (spec §4), written once above the store's primitives.

A ban is stored (reason, scope, start, end) so operators and account owners can see it
and lift it; the tallies that lead to one are windowed counters.
"""

from __future__ import annotations

from dataclasses import dataclass

from capd.errors import CapdError
from capd.store.base import Store

IP_SCOPE = "ip"
ACCOUNT_IP_SCOPE = "account_ip"


@dataclass(frozen=True)
class LimitRules:
    max_polls_per_task: int
    max_polls_per_s: int
    ban_duration_s: float
    unknown_key_ban_threshold: int
    violation_block_threshold: int
    violation_window_s: float
    poll_window_s: float  # how long a task's poll count is remembered


class Limits:
    """Decides bans, blocks and poll refusals; raises the matching CapdError."""

    def __init__(self, store: Store, rules: LimitRules) -> None:
        self.store = store
        self.rules = rules

    async def check_ip_ban(self, ip: str, now: float, key_known: bool | None) -> None:
        """ERROR_IP_BANNED while the IP is banned; unknown keys sent meanwhile extend it."""
        ban = await self.store.active_ban(IP_SCOPE, ip, None, now)
        if ban is None:
            return
        if key_known is False:
            await self.note_unknown_key(ip, now)
        raise CapdError("ERROR_IP_BANNED")

    async def note_unknown_key(self, ip: str, now: float) -> None:
        """Count an unknown-key request; at the threshold, ban (or extend the ban of) the IP."""
        r = self.rules
        count = await self.store.incr_counter(f"unknown-key:{ip}", r.violation_window_s, now)
        if count >= r.unknown_key_ban_threshold:
            await self._ban(IP_SCOPE, ip, None, "repeated requests with unknown keys", now)

    async def check_account_block(self, account_id: int, ip: str, now: float) -> None:
        """ERROR_IP_BLOCKED while this account is blocked from this IP; requests meanwhile
        count as continued violations and extend the block."""
        block = await self.store.active_ban(ACCOUNT_IP_SCOPE, ip, account_id, now)
        if block is None:
            return
        await self.note_violation(account_id, ip, block.reason, now)
        raise CapdError("ERROR_IP_BLOCKED")

    async def note_violation(self, account_id: int, ip: str, reason: str, now: float) -> None:
        """Count a violation by an account from an IP; at the threshold, block the pair."""
        r = self.rules
        count = await self.store.incr_counter(f"violation:{account_id}:{ip}",
                                              r.violation_window_s, now)
        if count >= r.violation_block_threshold:
            await self._ban(ACCOUNT_IP_SCOPE, ip, account_id, reason, now)

    async def _ban(self, scope: str, ip: str, account_id: int | None, reason: str,
                   now: float) -> None:
        ends = now + self.rules.ban_duration_s
        current = await self.store.active_ban(scope, ip, account_id, now)
        if current is None:
            await self.store.add_ban(scope, ip, account_id, reason, now, ends)
        else:
            await self.store.extend_ban(current.id, ends)

    async def check_poll(self, task_id: int, account_id: int, ip: str, now: float) -> None:
        """At most N polls per task (a violation beyond), and at most M per second."""
        r = self.rules
        # one round trip for both tallies: the poll path is the hot path
        polls, rate = await self.store.incr_counters(
            [(f"polls:{task_id}", r.poll_window_s), (f"rate:{task_id}:{int(now)}", 1.0)], now)
        if polls > r.max_polls_per_task:
            await self.note_violation(account_id, ip, "more than the allowed polls of a task",
                                      now)
            raise CapdError("ERROR_TOO_MUCH_REQUESTS",
                            f"a task answers at most {r.max_polls_per_task} polls")
        if rate > r.max_polls_per_s:
            raise CapdError("ERROR_TOO_MUCH_REQUESTS",
                            f"poll a task at most {r.max_polls_per_s} times per second")
