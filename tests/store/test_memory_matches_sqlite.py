"""MemoryStore keeps SQLite's rules: any sequence of money and task transitions gives the
same answers, errors, balances, ledger and statistics on both."""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import asdict, is_dataclass
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from capd.store.base import Store
from capd.store.memory import MemoryStore
from capd.store.sqlite import SQLiteStore
from tests.store.contract import NOW, new_task

TYPES = ["ImageToTextTask", "TurnstileTask"]
OWNERS = ["a", "b"]

tasks = st.integers(0, 3)  # which of the tasks created so far, counted from the newest
owners = st.none() | st.sampled_from(OWNERS)
create = st.tuples(st.just("create"), st.integers(0, 900), st.sampled_from([5, 60]),
                   st.sampled_from(TYPES))
claim = st.tuples(st.just("claim"), st.sampled_from([TYPES[:1], TYPES]), st.integers(1, 3),
                  st.sampled_from(OWNERS), st.sampled_from([3, 10]))
step = st.one_of(
    create, claim,
    st.tuples(st.just("adjust"), st.integers(-3000, 3000)),
    st.tuples(st.just("solve"), tasks, owners),
    st.tuples(st.just("fail"), tasks, owners),
    st.tuples(st.just("extend"), tasks, st.sampled_from(OWNERS), st.integers(1, 100)),
    st.tuples(st.just("report"), tasks, st.booleans(), st.booleans()),
    st.tuples(st.just("tick"), st.sampled_from([1, 2, 4, 8, 30, 90_000])),
    st.tuples(st.just("overdue")),
    st.tuples(st.just("depth"), st.sampled_from(TYPES)),
)
# episodes that queue and claim work, then do anything: so that leases, extensions,
# owners' finishes and reports are reached often, not only by chance
scripts = st.lists(st.tuples(create, claim, st.lists(step, max_size=5)), min_size=1,
                   max_size=8).map(lambda eps: [s for c, k, rest in eps for s in (c, k, *rest)])


def plain(value: Any) -> Any:
    """Results as comparable data; an exception as its type's name."""
    if isinstance(value, BaseException):
        return type(value).__name__
    if is_dataclass(value) and not isinstance(value, type):
        return asdict(value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    return value


async def replay(store: Store, script: list[tuple[Any, ...]]) -> list[Any]:
    await store.migrate()
    ids = itertools.count(1)
    mine = await store.create_account("me", "a" * 32, NOW, opening_units=2000)
    other = await store.create_account("other", "b" * 32, NOW)
    now, out = NOW, []
    created: list[int] = []
    leased: list[int] = []  # claimed at some point: where leases, extensions and owners matter

    def pick(n: int, among: list[int] | None = None) -> int:
        ids = among or created
        return ids[-1 - n % len(ids)] if ids else 999

    for step in script:
        kind, args = step[0], step[1:]
        try:
            if kind == "adjust":
                result: Any = await store.adjust_balance(mine, args[0], "adjustment", "t", "",
                                                         now)
            elif kind == "create":
                result = await store.create_task(
                    new_task(mine, price=args[0], deadline=now + args[1], task_type=args[2],
                             created=now), lambda: next(ids))
                created.append(result)
            elif kind == "claim":
                result = await store.claim_tasks(args[0], args[1], args[2], args[3], now)
                leased.extend(t.id for t in result)
            elif kind in ("solve", "fail"):
                outcome: dict[str, Any] = ({"solution": {"text": "x"}} if kind == "solve"
                                           else {"error_code": "ERROR_CAPTCHA_UNSOLVABLE"})
                result = await store.finish_task(pick(args[0], leased if args[1] else None),
                                                 now, owner=args[1], **outcome)
            elif kind == "extend":
                result = await store.extend_lease(pick(args[0], leased), args[1], now + args[2],
                                                  now)
            elif kind == "report":
                result = await store.report_task(pick(args[0]), mine if args[2] else other,
                                                 args[1], now, 86_400)
            elif kind == "tick":
                now += args[0]
                result = None
            elif kind == "overdue":
                result = sorted(t.id for t in await store.overdue_tasks(now))
            else:
                result = await store.queue_depth(args[0])
        except Exception as exc:  # compared by type: both stores must fail alike
            result = exc
        out.append(plain(result))
    out.append(plain([await store.account(mine), await store.account(other)]))
    out.append(plain(await store.ledger(mine, limit=1000)))
    out.append(await store.ledger_sum(mine))
    out.append(await store.stats(now))
    out.append(plain([await store.get_task(t) for t in created]))
    await store.close()
    return out


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scripts)
def test_memory_store_answers_as_sqlite_does(script: list[tuple[Any, ...]]) -> None:
    expected = asyncio.run(replay(SQLiteStore(":memory:"), script))
    assert asyncio.run(replay(MemoryStore(), script)) == expected
