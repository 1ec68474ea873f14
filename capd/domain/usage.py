"""Usage statistics, pure: anti-captcha's queue ids and names, medians, hourly series.

Read by getQueueStats / getSpendingStats (anti-captcha's statistics methods) and by the
web console's charts; the numbers come from the store, the shapes are decided here.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from capd.store.base import UsageRow

# anti-captcha's getQueueStats queue ids, onto capd's task types (the "with proxy" queues
# are the proxy-taking types; ImageToText serves both its English and Russian queues)
QUEUES: dict[int, tuple[str, ...]] = {
    1: ("ImageToTextTask",),
    2: ("ImageToTextTask",),
    5: ("RecaptchaV2Task", "NoCaptchaTask"),
    6: ("RecaptchaV2TaskProxyless", "NoCaptchaTaskProxyless"),
    7: ("FunCaptchaTask",),
    10: ("FunCaptchaTaskProxyless",),
    12: ("GeeTestTask",),
    13: ("GeeTestTaskProxyless",),
    18: ("RecaptchaV3TaskProxyless",),
    19: ("RecaptchaV3TaskProxyless",),
    20: ("RecaptchaV3TaskProxyless",),
    21: ("HCaptchaTask",),
    22: ("HCaptchaTaskProxyless",),
    23: ("RecaptchaV2EnterpriseTask",),
    24: ("RecaptchaV2EnterpriseTaskProxyless",),
    25: ("CustomTask",),
    26: ("TurnstileTask",),
    27: ("TurnstileTaskProxyless",),
    28: ("ComplexImageTask",),
    29: ("HCaptchaTask", "HCaptchaTaskProxyless"),
}

# getSpendingStats' ``queue`` names (as anti-captcha's statistics page spells them), onto
# capd's task types; a capd type name is accepted as well
QUEUE_NAMES: dict[str, tuple[str, ...]] = {
    "English ImageToText": ("ImageToTextTask",),
    "Russian ImageToText": ("ImageToTextTask",),
    "Recaptcha Proxyless": ("RecaptchaV2TaskProxyless", "NoCaptchaTaskProxyless"),
    "Recaptcha Proxyon": ("RecaptchaV2Task", "NoCaptchaTask"),
    "Recaptcha V3 Proxyless": ("RecaptchaV3TaskProxyless",),
    "Recaptcha Enterprise Proxyless": ("RecaptchaV2EnterpriseTaskProxyless",),
    "Recaptcha Enterprise Proxyon": ("RecaptchaV2EnterpriseTask",),
    "Funcaptcha Proxyless": ("FunCaptchaTaskProxyless",),
    "Funcaptcha Proxyon": ("FunCaptchaTask",),
    "GeeTest Proxyless": ("GeeTestTaskProxyless",),
    "GeeTest Proxyon": ("GeeTestTask",),
    "hCaptcha Proxyless": ("HCaptchaTaskProxyless",),
    "hCaptcha Proxyon": ("HCaptchaTask",),
    "Turnstile Proxyless": ("TurnstileTaskProxyless",),
    "Turnstile Proxyon": ("TurnstileTask",),
    "Image Coordinates": ("ComplexImageTask",),
    "AntiGate": ("CustomTask",),
}


def median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def percentile(values: Sequence[float], share: float) -> float | None:
    """The nearest-rank percentile (``share`` in 0..1) of the values, None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(share * len(ordered)) - 1)]


@dataclass(frozen=True)
class QueueLoad:
    """getQueueStats' answer for one queue, before rendering."""

    waiting: int  # idle solver slots
    load: float  # percent of the slots busy (100 while work waits and no slot exists)
    bid: float  # USD per task
    speed: float  # median seconds from creation to solution, 0 when nothing was solved
    total: int  # solver slots


def queue_load(slots: int, busy: int, queued: int, price_per_task: float,
               solve_seconds: Sequence[float]) -> QueueLoad:
    """Fold what capd knows of a queue into anti-captcha's five numbers.

    capd counts solver *slots*: the built-in OCR threads for image types, and for worker
    types the live leases plus one when a worker has asked recently (capd cannot count idle
    external workers, only see that one polls)."""
    slots = max(slots, busy)
    load = 100.0 * busy / slots if slots else (100.0 if queued else 0.0)
    return QueueLoad(waiting=max(0, slots - busy), load=round(load, 2), bid=price_per_task,
                     speed=round(median(solve_seconds) or 0.0, 2), total=slots)


@dataclass(frozen=True)
class Bucket:
    start: float
    end: float  # inclusive last second, as getSpendingStats' dateTill
    tasks: int
    solved: int
    failed: int
    spent_units: int


def series(rows: Iterable[UsageRow], start: float, count: int, bucket_s: float,
           types: Iterable[str] | None = None) -> list[Bucket]:
    """``count`` consecutive buckets from ``start``, summing the rows of ``types`` (all
    types when None); buckets without rows are zeros."""
    wanted = set(types) if types is not None else None
    sums: dict[float, list[int]] = {}
    for row in rows:
        if wanted is not None and row.type not in wanted:
            continue
        acc = sums.setdefault(row.bucket_start, [0, 0, 0, 0])
        acc[0] += row.created
        acc[1] += row.solved
        acc[2] += row.failed
        acc[3] += row.spent_units
    out = []
    for i in range(count):
        begin = start + i * bucket_s
        t, s, f, m = sums.get(begin, [0, 0, 0, 0])
        out.append(Bucket(begin, begin + bucket_s - 1, t, s, f, m))
    return out


def solve_rate(solved: int, failed: int) -> float | None:
    """Solved share of the finished tasks, None when none finished."""
    done = solved + failed
    return solved / done if done else None
