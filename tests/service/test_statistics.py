"""anti-captcha's statistics methods called on the Service with typed requests (no server):
getQueueStats (no key, cached) and getSpendingStats (the caller's hours)."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from capd.constants import QUEUE_STATS_CACHE_S, SPENDING_STATS_HOURS
from capd.errors import BadParameter
from capd.service import (
    CreateTaskRequest,
    Parsed,
    QueueStatsRequest,
    SpendingStatsRequest,
)
from capd.store.base import Store
from tests.helpers import FakeClock, image_task
from tests.service.kit import PUBLIC_IP, World, refused_code, run, world

HOUR = 3600


@pytest.fixture
def w(store: Store, clock: FakeClock, tmp_path: Path) -> World:
    built = world(store, clock, tmp_path, builtin_ocr=False)
    built.dispatcher.attach("ImageToTextTask")
    return built


@pytest.mark.parametrize("queue_id", [None, 3, 30])
def test_queue_stats_refuse_an_unknown_queue_id(w: World, queue_id: int | None) -> None:
    assert refused_code(w.service.queue_stats(QueueStatsRequest(queue_id))) == (
        "ERROR_BAD_PARAMETERS")


def test_queue_stats_count_a_worker_that_asked_recently(w: World) -> None:
    run(w.store.note_workers(["RecaptchaV2TaskProxyless"], w.clock()))
    load = run(w.service.queue_stats(QueueStatsRequest(6)))
    assert (load.total, load.waiting, load.load) == (1, 1, 0.0)


def test_queue_stats_are_cached(w: World) -> None:
    before = run(w.service.queue_stats(QueueStatsRequest(6)))
    run(w.store.note_workers(["RecaptchaV2TaskProxyless"], w.clock()))
    assert run(w.service.queue_stats(QueueStatsRequest(6))) == before
    w.clock.advance(QUEUE_STATS_CACHE_S)
    assert run(w.service.queue_stats(QueueStatsRequest(6))).total == before.total + 1


def test_spending_stats_check_the_key_before_the_date(w: World) -> None:
    bad_date: Parsed[int | None] = Parsed(None, BadParameter("date"))
    assert refused_code(w.service.spending_stats(SpendingStatsRequest(
        "0" * 32, PUBLIC_IP, bad_date))) == "ERROR_KEY_DOES_NOT_EXIST"


def test_spending_stats_refuse_an_unknown_queue(w: World) -> None:
    key = w.account()
    assert refused_code(w.service.spending_stats(SpendingStatsRequest(
        key, PUBLIC_IP, queue=Parsed("No Such Queue")))) == "ERROR_BAD_PARAMETERS"


def test_spending_stats_count_the_callers_tasks_per_hour(w: World) -> None:
    key = w.account()
    created = run(w.service.create_task(CreateTaskRequest(key, PUBLIC_IP, image_task())))
    run(w.service.finish_task(created.task_id, solution={"text": "abc"}))
    hours = run(w.service.spending_stats(SpendingStatsRequest(
        key, PUBLIC_IP, Parsed(int(w.clock())))))
    assert len(hours) == SPENDING_STATS_HOURS
    first = hours[0]
    assert first.date_from == int(w.clock()) // HOUR * HOUR
    assert first.date_till == first.date_from + HOUR - 1
    assert (first.volume, first.money) == (1, Decimal("0.0003"))
    assert all(h.volume == 0 for h in hours[1:])


def test_spending_stats_of_one_queue_leave_out_other_types(w: World) -> None:
    key = w.account()
    run(w.service.create_task(CreateTaskRequest(key, PUBLIC_IP, image_task())))
    hours = run(w.service.spending_stats(SpendingStatsRequest(
        key, PUBLIC_IP, Parsed(int(w.clock())), Parsed("Turnstile Proxyless"))))
    assert sum(h.volume for h in hours) == 0
