"""Usage statistics, pure: queue load numbers, hourly/daily series, percentiles."""

from __future__ import annotations

from capd.domain.catalogue import TASK_TYPES
from capd.domain.usage import QUEUE_NAMES, QUEUES, percentile, queue_load, series, solve_rate
from capd.store.base import UsageRow


def test_every_queue_names_known_task_types() -> None:
    for types in [*QUEUES.values(), *QUEUE_NAMES.values()]:
        assert types and all(t in TASK_TYPES for t in types)


def test_queue_load_is_the_busy_share_of_the_slots() -> None:
    load = queue_load(slots=4, busy=1, queued=0, price_per_task=0.0003,
                      solve_seconds=[1.0, 3.0, 2.0])
    assert (load.total, load.waiting, load.load, load.speed) == (4, 3, 25.0, 2.0)


def test_queue_load_without_slots_is_full_only_while_work_waits() -> None:
    assert queue_load(0, 0, 0, 0.0, []).load == 0.0
    assert queue_load(0, 0, 5, 0.0, []).load == 100.0


def test_leases_beyond_the_known_slots_count_as_slots() -> None:
    load = queue_load(slots=1, busy=3, queued=0, price_per_task=0.0, solve_seconds=[])
    assert (load.total, load.waiting, load.load) == (3, 0, 100.0)


def test_series_fills_empty_buckets_and_filters_types() -> None:
    rows = [UsageRow(3600, "A", 2, 1, 1, 50), UsageRow(3600, "B", 1, 1, 0, 10),
            UsageRow(10800, "A", 4, 4, 0, 80)]
    buckets = series(rows, 0, 4, 3600, ["A"])
    assert [b.tasks for b in buckets] == [0, 2, 0, 4]
    assert [b.spent_units for b in buckets] == [0, 50, 0, 80]
    assert (buckets[1].start, buckets[1].end) == (3600, 7199)
    assert [b.tasks for b in series(rows, 0, 4, 3600)] == [0, 3, 0, 4]


def test_percentile_and_solve_rate() -> None:
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 0.95) == 5.0
    assert percentile([5.0, 1.0, 3.0, 2.0, 4.0], 0.5) == 3.0
    assert percentile([], 0.5) is None
    assert solve_rate(3, 1) == 0.75 and solve_rate(0, 0) is None
