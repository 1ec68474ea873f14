"""Issue 13, finding 5 (service side): proxy pre-flight refusals are violations and the
pre-flight is rate-limited per account; IPv6 bans and tallies cover the caller's /64."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from capd.domain.limits import ban_key
from capd.outbound.proxycheck import ProxySpec
from capd.service import BalanceRequest, CreateTaskRequest
from capd.store.base import Store
from tests.helpers import SITEKEY, FakeClock
from tests.service.kit import PUBLIC_IP, World, refused_code, run, world

TYPE = "RecaptchaV2Task"


class RefusingChecker:
    """A proxy pre-flight that refuses every proxy, counting the checks it makes."""

    def __init__(self) -> None:
        self.checks = 0

    async def check(self, spec: ProxySpec, host: str) -> str | None:
        self.checks += 1
        return "ERROR_PROXY_CONNECT_REFUSED"


@pytest.fixture
def w(store: Store, clock: FakeClock, tmp_path: Path) -> World:
    built = world(store, clock, tmp_path, violation_block_threshold=5,
                  proxy_checks_per_window=3)
    run(built.store.note_workers([TYPE], clock()))
    return built


def proxied(port: int) -> dict[str, Any]:
    return {"type": TYPE, "websiteURL": "https://example.com/", "websiteKey": SITEKEY,
            "proxyType": "socks5", "proxyAddress": "8.8.8.8", "proxyPort": port}


def create_code(w: World, key: str, body: dict[str, Any], ip: str = PUBLIC_IP) -> str:
    return refused_code(w.service.create_task(CreateTaskRequest(key, ip, body)))


def test_preflight_refusals_count_as_violations_until_blocked(w: World) -> None:
    checker = RefusingChecker()
    w.service.proxy_checker = checker  # type: ignore[assignment]
    key = w.account()
    codes = [create_code(w, key, proxied(1000 + i)) for i in range(3)]
    assert codes == ["ERROR_PROXY_CONNECT_REFUSED"] * 3
    count = run(w.store.incr_counter(f"violation:{w.account_id(key)}:{PUBLIC_IP}", 60,
                                     w.clock()))
    assert count == 4  # three refusals, then this probe


def test_preflight_is_rate_limited_per_account(w: World) -> None:
    checker = RefusingChecker()
    w.service.proxy_checker = checker  # type: ignore[assignment]
    key = w.account()
    codes = [create_code(w, key, proxied(2000 + i)) for i in range(4)]
    assert codes[-1] == "ERROR_TOO_MUCH_REQUESTS" and checker.checks == 3
    # another account is not held back by this one
    assert create_code(w, w.account(), proxied(3000)) == "ERROR_PROXY_CONNECT_REFUSED"


@pytest.mark.parametrize(("ip", "key"), [
    ("2001:db8:1:2:aaaa::1", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff:ffff:ffff:ffff", "2001:db8:1:2::/64"),
    ("203.0.113.7", "203.0.113.7"),
    ("::ffff:203.0.113.7", "203.0.113.7"),
])
def test_ban_key_is_the_ipv6_64(ip: str, key: str) -> None:
    assert ban_key(ip) == key


def test_ipv6_ban_covers_the_whole_64(store: Store, clock: FakeClock, tmp_path: Path) -> None:
    w = world(store, clock, tmp_path, unknown_key_ban_threshold=3)
    for i in range(3):
        refused_code(w.service.get_balance(BalanceRequest("0" * 32, f"2001:db8:5:6::{i + 1}")))
    neighbour = "2001:db8:5:6:ffff::9"
    assert refused_code(w.service.get_balance(BalanceRequest(w.account(), neighbour))) == (
        "ERROR_IP_BANNED")
    other_net = "2001:db8:5:7::1"
    assert run(w.service.get_balance(BalanceRequest(w.account(), other_net))).amount > 0
