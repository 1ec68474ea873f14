"""Poll limits and ban rules (spec §4), as pure decisions over counts and times.

The tallies (windowed counters) and the stored bans live in the store; ``capd.policy``
reads and writes them and asks these rules what a count means. Nothing here performs
I/O or reads a clock: every time is passed in.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from enum import StrEnum
from functools import lru_cache

from capd.errors import CapdError

IP_SCOPE = "ip"  # a ban of an IP, whatever the key (ERROR_IP_BANNED)
ACCOUNT_IP_SCOPE = "account_ip"  # a block of one account from one IP (ERROR_IP_BLOCKED)

# why an account+IP pair earns a violation (spec §4); kept as the ban's reason
ZERO_BALANCE = "requests at zero balance"
UNKNOWN_TASK = "polls of unknown task ids"
TOO_MANY_POLLS = "more than the allowed polls of a task"
BANNED_PROXY = "tasks with banned proxies"
UNKNOWN_KEYS = "repeated requests with unknown keys"
PROXY_REFUSED = "tasks whose proxy failed the pre-flight check"

IPV6_BAN_PREFIX = 64  # one IPv6 subscriber holds a whole /64: bans and tallies cover it


@lru_cache(maxsize=4096)  # pure, and parsed on every request of the poll path
def ban_key(ip: str) -> str:
    """What bans, blocks and their tallies are kept under for a caller's address: an IPv4
    address itself, the /64 network of an IPv6 address (``2001:db8:1:2::/64``), so that
    hopping between the addresses of one's own /64 neither escapes a ban nor resets the
    count. Anything else (no address) is kept as given."""
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return str(addr.ipv4_mapped)
        return str(ipaddress.IPv6Network((addr, IPV6_BAN_PREFIX), strict=False))
    return str(addr)


@dataclass(frozen=True)
class LimitRules:
    """The operator's thresholds, windows and durations (``capd.config.Settings``)."""

    max_polls_per_task: int
    max_polls_per_s: int
    ban_duration_s: float
    unknown_key_ban_threshold: int
    violation_block_threshold: int
    violation_window_s: float
    poll_window_s: float  # how long a task's poll count is remembered


class PollVerdict(StrEnum):
    """What a poll of a task is, given how often the task has been polled."""

    ALLOWED = "allowed"
    TOO_MANY = "too_many"  # over the per-task total: refused, and a violation
    TOO_FAST = "too_fast"  # over the per-second rate: refused, not a violation


def bans_ip(unknown_key_count: int, rules: LimitRules) -> bool:
    """Whether this many unknown-key requests from one IP in a window ban the IP."""
    return unknown_key_count >= rules.unknown_key_ban_threshold


def blocks_account_ip(violation_count: int, rules: LimitRules) -> bool:
    """Whether this many violations by an account from an IP in a window block the pair."""
    return violation_count >= rules.violation_block_threshold


def ban_ends_at(now: float, rules: LimitRules) -> float:
    """When a ban started (or extended) at ``now`` ends."""
    return now + rules.ban_duration_s


def poll_verdict(polls: int, polls_this_second: int, rules: LimitRules) -> PollVerdict:
    """At most N polls per task in all (spec §4: 120), and at most M per second."""
    if polls > rules.max_polls_per_task:
        return PollVerdict.TOO_MANY
    if polls_this_second > rules.max_polls_per_s:
        return PollVerdict.TOO_FAST
    return PollVerdict.ALLOWED


def poll_refusal(verdict: PollVerdict, rules: LimitRules) -> CapdError:
    """The error a refused poll answers."""
    if verdict == PollVerdict.TOO_MANY:
        return CapdError("ERROR_TOO_MUCH_REQUESTS",
                         f"a task answers at most {rules.max_polls_per_task} polls")
    return CapdError("ERROR_TOO_MUCH_REQUESTS",
                     f"poll a task at most {rules.max_polls_per_s} times per second")
