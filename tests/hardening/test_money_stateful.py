"""Money invariants as a stateful property (issue 7 §2): any interleaving of createTask
(reserve), completion with a solution (capture), failure (release), overdue expiry, claim
with a lease, image report (refund) and top-ups or adjustments, straight on the Store
primitives of both backends. After every step, for the account under test:

- its balance equals the sum of its ledger, and never goes below zero;
- what it has reserved equals the reservations of its open tasks (so every reservation
  is either still open, or was captured or released exactly once);
- no task carries more than one charge, nor more than one refund;
- balance and reservations match a plain model of the rules.
"""

from __future__ import annotations

import asyncio
import itertools
import secrets
from collections import Counter
from typing import Any

import pytest
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    rule,
    run_state_machine_as_test,
)

from capd.errors import InsufficientFunds
from capd.store import open_store
from capd.store.base import OPEN_STATES, NewTask, Store, TaskState
from tests.hardening.conftest import budget

REPORT_WINDOW_S = 86_400.0
_ids = itertools.count(1_000_000 + secrets.randbelow(10**9))


def build_machine(store: Store, loop: asyncio.AbstractEventLoop) -> type[RuleBasedStateMachine]:
    def run(coro: Any) -> Any:
        return loop.run_until_complete(coro)

    class Money(RuleBasedStateMachine):
        tasks = Bundle("tasks")

        def __init__(self) -> None:
            super().__init__()
            self.now = 1_700_000_000.0
            # a fresh account (and task type) per example: the store is shared between them
            self.account_id = run(store.create_account("prop", secrets.token_hex(16), self.now))
            self.type = f"Prop{self.account_id}Task"
            self.balance = 0
            self.reserved = 0
            self.open: dict[int, int] = {}  # task id -> price
            self.solved: dict[int, int] = {}  # task id -> cost, not yet refunded
            self.all: list[int] = []
            self.owners: dict[int, str] = {}

        @rule(amount=st.integers(1, 5_000_000))
        def top_up(self, amount: int) -> None:
            run(store.adjust_balance(self.account_id, amount, "topup", "prop", "", self.now))
            self.balance += amount

        @rule(amount=st.integers(1, 5_000_000))
        def adjust_down(self, amount: int) -> None:
            try:
                run(store.adjust_balance(self.account_id, -amount, "adjustment", "prop", "",
                                         self.now))
            except InsufficientFunds:
                assert self.balance - amount < self.reserved
                return
            assert self.balance - amount >= self.reserved
            self.balance -= amount

        @rule(target=tasks, price=st.integers(0, 2_000_000), deadline_s=st.sampled_from([5, 60]))
        def create(self, price: int, deadline_s: int) -> Any:
            new = NewTask(self.account_id, self.type, {"n": 1}, {}, price, self.now,
                          self.now + deadline_s, "192.0.2.1")
            try:
                task_id = run(store.create_task(new, lambda: next(_ids)))
            except InsufficientFunds:
                assert self.balance - self.reserved < price
                return -1
            assert self.balance - self.reserved >= price
            self.reserved += price
            self.open[task_id] = price
            self.all.append(task_id)
            return task_id

        @rule(task_id=tasks)
        def claim(self, task_id: int) -> None:
            owner = secrets.token_hex(4)
            claimed = run(store.claim_tasks([self.type], 1, owner, 30, self.now))
            for task in claimed:
                assert task.id in self.open and task.account_id == self.account_id
                self.owners[task.id] = owner

        def _finish(self, task_id: int, solved: bool, owner: str | None = None) -> None:
            done = run(store.finish_task(task_id, self.now, owner=owner,
                                         **({"solution": {"text": "x"}} if solved
                                            else {"error_code": "ERROR_CAPTCHA_UNSOLVABLE"})))
            if task_id not in self.open:
                assert done is None  # completion happens once
                return
            if done is None:  # only a stale owner may be refused
                assert owner is not None
                return
            price = self.open.pop(task_id)
            self.reserved -= price
            if solved:
                self.balance -= price
                self.solved[task_id] = price
            assert done.state == (TaskState.SOLVED if solved else TaskState.FAILED)

        @rule(task_id=tasks)
        def solve(self, task_id: int) -> None:
            self._finish(task_id, True)

        @rule(task_id=tasks)
        def fail(self, task_id: int) -> None:
            self._finish(task_id, False)

        @rule(task_id=tasks)
        def solve_by_lease_holder(self, task_id: int) -> None:
            self._finish(task_id, True, owner=self.owners.get(task_id, "nobody"))

        @rule(task_id=consumes(tasks))
        def solve_twice(self, task_id: int) -> None:
            self._finish(task_id, True)
            self._finish(task_id, True)
            self._finish(task_id, False)

        @rule(seconds=st.sampled_from([1, 10, 61, 3_600]))
        def time_passes_and_overdue_tasks_expire(self, seconds: int) -> None:
            self.now += seconds
            for task in run(store.overdue_tasks(self.now, limit=1_000)):
                if task.account_id == self.account_id:
                    assert task.deadline_at < self.now or task.deadline_at <= self.now
                    self._finish(task.id, False)

        @rule(task_id=tasks)
        def report(self, task_id: int) -> None:
            if task_id < 0:
                return
            ok = run(store.report_task(task_id, self.account_id, True, self.now,
                                       REPORT_WINDOW_S))
            if task_id in self.solved and ok:
                self.balance += self.solved.pop(task_id)
            elif ok:
                raise AssertionError("a report was accepted for a task not solved or refunded")

        @invariant()
        def ledger_matches(self) -> None:
            account = run(store.account(self.account_id))
            assert account is not None
            assert account.balance_units == run(store.ledger_sum(self.account_id))
            assert account.balance_units >= 0 and account.reserved_units >= 0
            assert account.balance_units - account.reserved_units >= 0
            assert (account.balance_units, account.reserved_units) == (self.balance,
                                                                        self.reserved)

        @invariant()
        def reservations_are_the_open_tasks(self) -> None:
            open_reserved = 0
            for task_id in self.all:
                task = run(store.get_task(task_id, with_payload=False))
                assert task is not None
                if task.state in OPEN_STATES:
                    open_reserved += task.reserved_units
                    assert task.reserved_units == task.price_units
                else:
                    assert task.reserved_units == 0
            assert open_reserved == self.reserved

        @invariant()
        def at_most_one_charge_and_one_refund_per_task(self) -> None:
            entries = run(store.ledger(self.account_id, limit=100_000))
            kinds = Counter((e.kind, e.task_id) for e in entries if e.task_id is not None)
            assert all(n == 1 for n in kinds.values()), kinds

    return Money


@pytest.mark.parametrize("examples", [budget(25)])
def test_money_invariants_hold_for_any_interleaving(backend: str, examples: int) -> None:
    loop = asyncio.new_event_loop()
    store = open_store(backend)
    try:
        loop.run_until_complete(store.migrate())
        machine = build_machine(store, loop)
        run_state_machine_as_test(machine, settings=settings(
            settings.get_profile("capd-hardening"), max_examples=examples,
            stateful_step_count=30))
    finally:
        loop.run_until_complete(store.close())
        loop.close()
