"""The application: one call per API method, turning requests into domain decisions.

Front doors parse transport and render answers; everything in between happens here, in
the spec's validation order. Clock, id source, store and guards are injected.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Callable
from dataclasses import asdict
from functools import lru_cache
from typing import Any

from capd.config import Settings
from capd.constants import QUEUE_STATS_CACHE_S, QUEUE_STATS_SPEED_WINDOW_S, SPENDING_STATS_HOURS
from capd.domain.catalogue import TASK_TYPES
from capd.domain.keys import KeyOptions, parse_client_key
from capd.domain.limits import LimitRules, Limits
from capd.domain.money import balance_number, format_cost, from_units, task_price_units
from capd.domain.tasks import GuardLike, ValidationRules, validate_task
from capd.domain.usage import QUEUE_NAMES, QUEUES, queue_load, series
from capd.errors import BadParameter, CapdError, InsufficientFunds
from capd.metrics import Metrics
from capd.outbound.proxycheck import ProxyChecker, ProxySpec
from capd.solving.dispatch import Dispatcher
from capd.solving.pool import default_threads
from capd.store.base import Caller, NewTask, Store, Task, TaskState

MAX_TASK_ID = 2**31 - 1  # JSON integer that every client (including 32-bit ones) can hold
IMAGE_REPORT_TYPES = frozenset({"ImageToTextTask", "ComplexImageTask"})


def random_task_id() -> int:
    """Unguessable ids: another account's id is as good as a random number."""
    return secrets.randbelow(MAX_TASK_ID - 1_000_000) + 1_000_000


@lru_cache(maxsize=4096)
def _networks(entries: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple(ipaddress.ip_network(e, strict=False) for e in entries)


def ip_allowed(ip: str, whitelist: tuple[str, ...]) -> bool:
    if not whitelist:
        return True
    try:
        addr = ipaddress.ip_address(ip)
    except ValueError:
        return False
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr in net for net in _networks(whitelist) if net.version == addr.version)


def parse_task_id(raw: Any) -> int | None:
    """taskId as a JSON integer or a numeric string (spec §2)."""
    if isinstance(raw, bool):
        return None
    if isinstance(raw, int):
        return raw if 0 < raw <= 2**63 - 1 else None
    if isinstance(raw, str) and raw.strip().isascii() and raw.strip().isdigit() and len(
            raw.strip()) <= 19:
        value = int(raw.strip())
        return value if value > 0 else None
    return None


class Service:
    def __init__(self, settings: Settings, store: Store, dispatcher: Dispatcher,
                 clock: Callable[[], float], metrics: Metrics, proxy_guard: GuardLike,
                 callback_guard: GuardLike, new_id: Callable[[], int] = random_task_id,
                 proxy_checker: ProxyChecker | None = None) -> None:
        self.settings = settings
        self.store = store
        self.dispatcher = dispatcher
        self.clock = clock
        self.metrics = metrics
        self.proxy_guard = proxy_guard
        self.callback_guard = callback_guard
        self.new_id = new_id
        self.proxy_checker = proxy_checker
        s = settings
        self.rules = ValidationRules(s.min_image_bytes, s.max_image_bytes, s.min_browser_major,
                                     s.min_safari_major)
        self.limits = Limits(store, LimitRules(
            s.max_polls_per_task, s.max_polls_per_s, s.ban_duration_s,
            s.unknown_key_ban_threshold, s.violation_block_threshold, s.violation_window_s,
            poll_window_s=max(s.image_deadline_s, s.worker_deadline_s,
                              *s.deadlines_s.values()) + s.result_ttl_s))
        self.finish_listeners: list[Callable[[Task], Any]] = []
        self._queue_stats_cache: dict[int, tuple[float, dict[str, Any]]] = {}  # getQueueStats

    # -- who is calling ---------------------------------------------------------------------
    async def authenticate(self, raw_key: Any, ip: str) -> tuple[Caller, KeyOptions]:
        """Spec §5 step 2: IP ban, key, account+IP block, whitelist."""
        now = self.clock()
        opts = parse_client_key(raw_key)
        caller = await self.store.caller_for_key(opts.key) if opts else None
        await self.limits.check_ip_ban(ip, now, key_known=caller is not None)
        if caller is None:
            await self.limits.note_unknown_key(ip, now)
            raise CapdError("ERROR_KEY_DOES_NOT_EXIST")
        assert opts is not None
        if not ip_allowed(ip, caller.whitelist):
            raise CapdError("ERROR_IP_NOT_ALLOWED", f"{ip} is not on this account's whitelist")
        await self.limits.check_account_block(caller.account_id, ip, now)
        return caller, opts

    # -- createTask -------------------------------------------------------------------------
    async def create_task(self, body: dict[str, Any], ip: str) -> int:
        task = body.get("task")
        if not isinstance(task, dict):
            raise CapdError("ERROR_TASK_ABSENT")
        caller, key = await self.authenticate(body.get("clientKey"), ip)
        try:
            checked = await validate_task(
                task, key, body.get("callbackUrl"), self.rules, self.proxy_guard,
                self.callback_guard, self._proxy_banned)
        except CapdError as exc:
            if exc.code == "ERROR_PROXY_BANNED":
                await self.limits.note_violation(caller.account_id, ip,
                                                 "tasks with banned proxies", self.clock())
            raise
        ttype = checked.type
        now = self.clock()
        if checked.website_host is not None:
            listed = await self.store.blocked_domain(checked.website_host)
            if listed is not None:
                raise CapdError("ERROR_DOMAIN_NOT_ALLOWED", f"{listed} is on the blocklist")
        price = task_price_units(self.settings.price_per_1000(ttype.name))
        account = await self.store.account(caller.account_id)
        if account is None or account.balance_units - account.reserved_units < price:
            await self.limits.note_violation(caller.account_id, ip, "requests at zero balance",
                                             now)
            raise CapdError("ERROR_ZERO_BALANCE")
        await self.dispatcher.check_capacity(ttype.name)
        if checked.proxy is not None and self.proxy_checker is not None:
            await self._preflight(checked.proxy, task, checked.website_host)
        options: dict[str, Any] = {"nocache": key.nocache}
        if checked.image_spec is not None:
            options["image"] = asdict(checked.image_spec)
        new = NewTask(
            account_id=caller.account_id, type=ttype.name, payload=checked.fields,
            options=options, price_units=price, created_at=now,
            deadline_at=now + self.settings.deadline_s(ttype.name, ttype.built_in),
            client_ip=ip, callback_url=checked.callback_url)
        try:
            task_id = await self.store.create_task(new, self.new_id)
        except InsufficientFunds:
            await self.limits.note_violation(caller.account_id, ip, "requests at zero balance",
                                             now)
            raise CapdError("ERROR_ZERO_BALANCE") from None
        self.metrics.inc("capd_tasks_created_total", type=ttype.name)
        self.dispatcher.notify(ttype.name)
        return task_id

    async def _preflight(self, proxy: tuple[str, str, int], task: dict[str, Any],
                         website_host: str | None) -> None:
        """Check the task's proxy before queueing it (cached briefly by the checker)."""
        assert self.proxy_checker is not None
        login, password = task.get("proxyLogin"), task.get("proxyPassword")
        spec = ProxySpec(proxy[0], proxy[1], proxy[2], login or None, password or None)
        code = await self.proxy_checker.check(spec, website_host or "example.com")
        if code is not None:
            raise CapdError(code, "the proxy pre-flight check failed")

    async def _proxy_banned(self, address: str, port: int) -> bool:
        return await self.store.proxy_banned(address, port, self.clock())

    # -- getTaskResult ----------------------------------------------------------------------
    async def _own_task(self, body: dict[str, Any], ip: str, caller: Caller) -> Task:
        """The caller's task named by ``taskId``, while its result is kept; else
        ERROR_NO_SUCH_CAPCHA_ID (counted as a violation)."""
        now = self.clock()
        task_id = parse_task_id(body.get("taskId"))
        task = (await self.store.get_task(task_id, with_payload=False)
                if task_id is not None else None)
        if task is None or task.account_id != caller.account_id:
            await self.limits.note_violation(caller.account_id, ip, "polls of unknown task ids",
                                             now)
            raise CapdError("ERROR_NO_SUCH_CAPCHA_ID")
        return task

    async def get_task_result(self, body: dict[str, Any], ip: str) -> dict[str, Any]:
        caller, _ = await self.authenticate(body.get("clientKey"), ip)
        task = await self._own_task(body, ip, caller)
        now = self.clock()
        if task.ended_at is not None and now > task.ended_at + self.settings.result_ttl_s:
            await self.limits.note_violation(caller.account_id, ip, "polls of unknown task ids",
                                             now)
            raise CapdError("ERROR_NO_SUCH_CAPCHA_ID", "the result has expired")
        await self.limits.check_poll(task.id, caller.account_id, ip, now)
        return self.result_of(task)

    def result_of(self, task: Task) -> dict[str, Any]:
        """The getTaskResult answer for a task (also what a callback posts)."""
        if task.state in (TaskState.QUEUED, TaskState.LEASED):
            return {"errorId": 0, "status": "processing"}
        if task.state == TaskState.FAILED:
            code = task.error_code or "ERROR_CAPTCHA_UNSOLVABLE"
            return {"errorId": 1, "errorCode": code,
                    "errorDescription": CapdError(code).description}
        return {
            "errorId": 0, "status": "ready", "solution": task.solution,
            "cost": format_cost(task.cost_units), "ip": task.client_ip,
            "createTime": int(task.created_at), "endTime": int(task.ended_at or task.created_at),
            "solveCount": 1,
        }

    # -- getBalance and reports -------------------------------------------------------------
    async def get_balance(self, body: dict[str, Any], ip: str) -> float:
        """Available balance: the ledger balance less what in-flight tasks reserve."""
        caller, _ = await self.authenticate(body.get("clientKey"), ip)
        account = await self.store.account(caller.account_id)
        assert account is not None
        return balance_number(account.balance_units - account.reserved_units)

    async def report_incorrect(self, body: dict[str, Any], ip: str, image: bool) -> None:
        """Spec §3: once per solved task of the caller, within the report window; image
        reports refund the charge, token reports are recorded for statistics."""
        caller, _ = await self.authenticate(body.get("clientKey"), ip)
        task = await self._own_task(body, ip, caller)
        if (task.type in IMAGE_REPORT_TYPES) != image or not await self.store.report_task(
                task.id, caller.account_id, refund=image, now=self.clock(),
                window_s=self.settings.report_window_s):
            raise CapdError("ERROR_NO_SUCH_CAPCHA_ID", "not a reportable solved task")

    # -- finishing ----------------------------------------------------------------------------
    async def finish_task(self, task_id: int, *, solution: dict[str, Any] | None = None,
                          error_code: str | None = None, owner: str | None = None
                          ) -> Task | None:
        """Complete a task once (capture or release) and tell the listeners."""
        done = await self.store.finish_task(task_id, self.clock(), solution=solution,
                                            error_code=error_code, owner=owner)
        if done is not None:
            outcome = "solved" if done.state == TaskState.SOLVED else (done.error_code or "")
            self.metrics.inc("capd_tasks_finished_total", type=done.type, outcome=outcome)
            for listener in self.finish_listeners:
                listener(done)
        return done

    async def expire_overdue(self) -> int:
        """Fail every open task past its deadline (uncharged); returns how many."""
        count = 0
        for task in await self.store.overdue_tasks(self.clock()):
            ttype = TASK_TYPES.get(task.type)
            code = ("ERROR_RECAPTCHA_TIMEOUT" if ttype is not None and ttype.recaptcha_family
                    else "ERROR_CAPTCHA_UNSOLVABLE")
            if await self.finish_task(task.id, error_code=code) is not None:
                count += 1
        return count

    # -- 2captcha's reportbad / reportgood ------------------------------------------------
    async def report_answer(self, body: dict[str, Any], ip: str, correct: bool) -> None:
        """2captcha's res.php reports (spec §9), for a task of any type: a bad report is the
        image report (refund) or token report that fits the task's type, with the same
        rules as report_incorrect; a good report is accepted for the caller's own task
        solved within the report window and changes nothing. Else ERROR_NO_SUCH_CAPCHA_ID."""
        caller, _ = await self.authenticate(body.get("clientKey"), ip)
        task = await self._own_task(body, ip, caller)
        now = self.clock()
        if correct:
            if (task.state != TaskState.SOLVED or task.ended_at is None
                    or now > task.ended_at + self.settings.report_window_s):
                raise CapdError("ERROR_NO_SUCH_CAPCHA_ID", "not a solved task")
            return
        if not await self.store.report_task(task.id, caller.account_id,
                                            refund=task.type in IMAGE_REPORT_TYPES, now=now,
                                            window_s=self.settings.report_window_s):
            raise CapdError("ERROR_NO_SUCH_CAPCHA_ID", "not a reportable solved task")

    # -- anti-captcha's statistics methods: getQueueStats, getSpendingStats ----------------
    async def queue_stats(self, body: dict[str, Any]) -> dict[str, Any]:
        """getQueueStats: solver slots, load, price and speed of one of anti-captcha's queue
        ids (no key needed; answers are cached ``QUEUE_STATS_CACHE_S``, as anti-captcha's)."""
        raw = body.get("queueId")
        queue_id = parse_task_id(raw) if not isinstance(raw, float) else None
        if queue_id is None or queue_id not in QUEUES:
            raise BadParameter("queueId", "not one of the queue ids (1, 2, 5-7, 10, 12, 13,"
                                          " 18-29)")
        now = self.clock()
        cached = self._queue_stats_cache.get(queue_id)
        if cached is not None and cached[0] > now:
            return cached[1]
        types = QUEUES[queue_id]
        open_tasks = await self.store.open_tasks()
        seen = {w.type: w for w in await self.store.workers_online(now)}
        since = now - QUEUE_STATS_SPEED_WINDOW_S
        speeds = [s for t, s in await self.store.solve_durations(None, since) if t in types]
        slots = busy = queued = 0
        for name in types:
            queued += open_tasks.get(name, (0, 0))[0]
            busy += open_tasks.get(name, (0, 0))[1]
            if TASK_TYPES[name].built_in and self.settings.builtin_ocr:
                slots += self.settings.ocr_threads or default_threads()
            worker = seen.get(name)
            if worker is not None:
                recent = (worker.last_seen or 0) >= now - self.settings.worker_seen_window_s
                slots += worker.leases_held - worker.builtin_leases + int(recent)
        price = float(from_units(task_price_units(self.settings.price_per_1000(types[0]))))
        load = queue_load(slots, busy, queued, price, speeds)
        answer = {"errorId": 0, "waiting": load.waiting, "load": load.load, "bid": load.bid,
                  "speed": load.speed, "total": load.total}
        self._queue_stats_cache[queue_id] = (now + QUEUE_STATS_CACHE_S, answer)
        return answer

    async def spending_stats(self, body: dict[str, Any], ip: str) -> list[dict[str, Any]]:
        """getSpendingStats: the caller's tasks and money per hour for 24 hours from the
        hour of ``date`` (default: the 24 hours up to now), optionally of one ``queue`` (an
        anti-captcha queue name or a capd task type) and one client ``ip``."""
        caller, _ = await self.authenticate(body.get("clientKey"), ip)
        hour = 3600
        now = self.clock()
        raw_date = body.get("date")
        if raw_date is None:
            start = (int(now) // hour - SPENDING_STATS_HOURS + 1) * hour
        else:
            date = parse_task_id(raw_date) if not isinstance(raw_date, float) else None
            if date is None or date > 2**40:
                raise BadParameter("date", "not a unix timestamp")
            start = date // hour * hour
        queue = body.get("queue")
        types: tuple[str, ...] | None = None
        if queue is not None and queue != "":
            if not isinstance(queue, str):
                raise BadParameter("queue", "not a string")
            types = QUEUE_NAMES.get(queue) or ((queue,) if queue in TASK_TYPES else None)
            if types is None:
                raise BadParameter("queue", "not a queue name or task type")
        only_ip = body.get("ip")
        if only_ip is not None and not isinstance(only_ip, str):
            raise BadParameter("ip", "not a string")
        rows = await self.store.usage(caller.account_id, start,
                                      start + SPENDING_STATS_HOURS * hour, hour, ip=only_ip)
        return [{"dateFrom": int(b.start), "dateTill": int(b.end), "volume": b.tasks,
                 "money": balance_number(b.spent_units)}
                for b in series(rows, start, SPENDING_STATS_HOURS, hour, types)]
