"""The application: one call per API method, turning typed requests into domain decisions.

Front doors parse transport into ``capd.service.messages`` requests and render the
results; everything in between happens here, in the spec's validation order (spec §5):
the pure checks of ``capd.domain``, with the I/O between them (the store, the outbound
address guard, the proxy pre-flight) done here. Clock, id source, store, guards and
settings are injected.
"""

from __future__ import annotations

import asyncio
import ipaddress
import secrets
from collections.abc import Callable
from functools import lru_cache
from typing import Any, Protocol

from capd.config import Settings
from capd.constants import QUEUE_STATS_CACHE_S, QUEUE_STATS_SPEED_WINDOW_S, SPENDING_STATS_HOURS
from capd.domain.catalogue import TASK_TYPES
from capd.domain.hosts import url_host
from capd.domain.images import check_image
from capd.domain.keys import KeyOptions, parse_client_key
from capd.domain.limits import (
    BANNED_PROXY,
    PROXY_REFUSED,
    UNKNOWN_TASK,
    ZERO_BALANCE,
    LimitRules,
)
from capd.domain.money import from_units, task_price_units
from capd.domain.tasks import (
    READ_IMAGE_TYPES,
    TaskDraft,
    ValidationRules,
    callback_host,
    callback_refused,
    check_browser,
    check_task,
    complete_task,
    spec_options,
    target_urls,
)
from capd.domain.usage import QUEUE_NAMES, QUEUES, QueueLoad, queue_load, series
from capd.errors import BadParameter, CapdError, InsufficientFunds
from capd.metrics import Metrics
from capd.outbound.guard import TargetGuard
from capd.outbound.proxycheck import ProxyChecker, ProxySpec
from capd.policy import Policy
from capd.service.messages import (
    Balance,
    BalanceRequest,
    CreateTaskRequest,
    Credentials,
    QueueStatsRequest,
    ReportKind,
    ReportRequest,
    ResultState,
    SpendingHour,
    SpendingStatsRequest,
    TaskCreated,
    TaskResult,
    TaskResultRequest,
)
from capd.solving.dispatch import Dispatcher
from capd.solving.pool import default_threads
from capd.store.base import Caller, NewTask, Store, Task, TaskState

MAX_TASK_ID = 2**31 - 1  # JSON integer that every client (including 32-bit ones) can hold
IMAGE_REPORT_TYPES = frozenset({"ImageToTextTask", "ComplexImageTask"})


class GuardLike(Protocol):
    """The outbound address guard (``capd.outbound.guard.AddressGuard``)."""

    async def allows(self, host: str) -> bool: ...


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


def limit_rules(s: Settings) -> LimitRules:
    """The operator's poll and ban settings as the rules ``capd.domain.limits`` applies."""
    return LimitRules(
        s.max_polls_per_task, s.max_polls_per_s, s.ban_duration_s,
        s.unknown_key_ban_threshold, s.violation_block_threshold, s.violation_window_s,
        poll_window_s=max(s.image_deadline_s, s.worker_deadline_s,
                          *s.deadlines_s.values()) + s.result_ttl_s)


def validation_rules(s: Settings) -> ValidationRules:
    return ValidationRules(s.min_image_bytes, s.max_image_bytes, s.min_browser_major,
                           s.min_safari_major)


FINAL_RESULTS_KEPT = 10_000  # final results remembered for polls (a few MB at most)


def result_of(task: Task) -> TaskResult:
    """A task's outcome as getTaskResult (and a callback) tells it."""
    if task.state in (TaskState.QUEUED, TaskState.LEASED):
        return TaskResult(task.id, ResultState.PROCESSING)
    if task.state == TaskState.FAILED:
        return TaskResult(task.id, ResultState.FAILED,
                          error_code=task.error_code or "ERROR_CAPTCHA_UNSOLVABLE")
    return TaskResult(task.id, ResultState.READY, solution=task.solution,
                      cost=from_units(task.cost_units), ip=task.client_ip,
                      created_at=task.created_at, ended_at=task.ended_at or task.created_at,
                      solve_count=1)


class Service:
    def __init__(self, settings: Settings, store: Store, dispatcher: Dispatcher,
                 clock: Callable[[], float], metrics: Metrics, proxy_guard: GuardLike,
                 callback_guard: GuardLike, new_id: Callable[[], int] = random_task_id,
                 proxy_checker: ProxyChecker | None = None, policy: Policy | None = None,
                 target_guard: GuardLike | None = None) -> None:
        self.settings = settings
        self.store = store
        self.dispatcher = dispatcher
        self.clock = clock
        self.metrics = metrics
        self.proxy_guard = proxy_guard
        self.callback_guard = callback_guard
        # the hosts of URLs handed to workers (issue 13): no internal addresses
        self.target_guard = target_guard or TargetGuard(settings.allow_private_targets)
        self.new_id = new_id
        self.proxy_checker = proxy_checker
        self.rules = validation_rules(settings)
        self.policy = policy or Policy(store, limit_rules(settings), clock)
        self.finish_listeners: list[Callable[[Task], Any]] = []
        # told of every task a report marked incorrect (custom modules drop it as a sample)
        self.report_listeners: list[Callable[[Task], Any]] = []
        # renders a finished task's callback body; with it, a task that has a callback URL
        # gets its outbox row in the transaction that finishes it (issue 12)
        self.callback_body: Callable[[Task], str] | None = None
        # final outcomes never change: polled again and again, each is built once
        self._final_results: dict[int, TaskResult] = {}
        self._queue_stats_cache: dict[int, tuple[float, QueueLoad]] = {}  # getQueueStats

    # -- who is calling ---------------------------------------------------------------------
    async def authenticate(self, who: Credentials) -> tuple[Caller, KeyOptions]:
        """Spec §5 step 2: IP ban, key, account+IP block, whitelist."""
        ip = who.ip
        opts = parse_client_key(who.client_key)
        caller = await self.store.caller_for_key(opts.key) if opts else None
        await self.policy.check_ip_ban(ip, key_known=caller is not None)
        if caller is None or opts is None:
            await self.policy.note_unknown_key(ip)
            raise CapdError("ERROR_KEY_DOES_NOT_EXIST")
        if caller.whitelist and not ip_allowed(ip, caller.whitelist):
            raise CapdError("ERROR_IP_NOT_ALLOWED", f"{ip} is not on this account's whitelist")
        await self.policy.check_account_block(caller.account_id, ip)
        return caller, opts

    # -- createTask -------------------------------------------------------------------------
    async def create_task(self, req: CreateTaskRequest) -> TaskCreated:
        """Validate (spec §5 steps 2-6), reserve the price and queue the task."""
        caller, key = await self.authenticate(req)
        ip = req.ip
        draft = check_task(req.task)
        if draft.proxy is not None:
            await self._check_proxy_address(draft.proxy, caller, ip)
        check_browser(draft, self.rules)
        cb_host = callback_host(req.callback_url)
        if cb_host is not None and not await self.callback_guard.allows(cb_host):
            raise callback_refused()
        await self._check_targets(draft)
        callback_url = req.callback_url if isinstance(req.callback_url, str) else None
        checked = complete_task(draft, req.task, key, callback_url, self.rules)
        ttype = checked.type
        if ttype.name in READ_IMAGE_TYPES:
            # spec §5 step 5, with issue 12: an image capd reads must decode; a full decode
            # can cost milliseconds, so it runs off the event loop
            for image in checked.images:
                await asyncio.to_thread(check_image, image)
        now = self.clock()
        if checked.website_host is not None:
            listed = await self.store.blocked_domain(checked.website_host)
            if listed is not None:
                raise CapdError("ERROR_DOMAIN_NOT_ALLOWED", f"{listed} is on the blocklist")
        price = task_price_units(self.settings.price_per_1000(ttype.name))
        account = await self.store.account(caller.account_id)
        if account is None or account.balance_units - account.reserved_units < price:
            await self.policy.note_violation(caller.account_id, ip, ZERO_BALANCE)
            raise CapdError("ERROR_ZERO_BALANCE")
        await self.dispatcher.check_capacity(ttype.name)
        if checked.proxy is not None and self.proxy_checker is not None:
            await self._preflight(checked.proxy, req.task, checked.website_host, caller, ip)
        options: dict[str, Any] = {"nocache": key.nocache}
        if checked.image_spec is not None:
            options["image"] = spec_options(checked.image_spec)
        new = NewTask(
            account_id=caller.account_id, type=ttype.name, payload=checked.fields,
            options=options, price_units=price, created_at=now,
            deadline_at=now + self.settings.deadline_s(ttype.name, ttype.built_in),
            client_ip=ip, callback_url=checked.callback_url)
        try:
            task_id = await self.store.create_task(new, self.new_id)
        except InsufficientFunds:
            await self.policy.note_violation(caller.account_id, ip, ZERO_BALANCE)
            raise CapdError("ERROR_ZERO_BALANCE") from None
        self.metrics.inc("capd_tasks_created_total", type=ttype.name)
        self.dispatcher.notify(ttype.name)
        return TaskCreated(task_id)

    async def _check_proxy_address(self, proxy: tuple[str, str, int], caller: Caller,
                                   ip: str) -> None:
        """Spec §5 step 4, proxy: not an internal address, not recently reported banned
        (a task with a banned proxy counts as a violation)."""
        _, address, port = proxy
        if not await self.proxy_guard.allows(address):
            raise CapdError("ERROR_PROXY_CONNECT_REFUSED", "proxy address is internal or unknown")
        if await self.store.proxy_banned(address, port, self.clock()):
            await self.policy.note_violation(caller.account_id, ip, BANNED_PROXY)
            raise CapdError("ERROR_PROXY_BANNED")

    async def _check_targets(self, draft: TaskDraft) -> None:
        """The URLs a worker is handed (websiteURL, imageUrls, apiJsUrl) name no internal
        host (ERROR_BAD_PARAMETERS naming the field), unless the operator allows it."""
        for name, url in target_urls(draft):
            host = url_host(url)
            if host is None:
                raise BadParameter(name, "not an http(s) URL of a valid host")
            if not await self.target_guard.allows(host):
                raise BadParameter(name, "naming an internal address")

    async def _preflight(self, proxy: tuple[str, str, int], task: dict[str, Any],
                         website_host: str | None, caller: Caller, ip: str) -> None:
        """Check the task's proxy before queueing it (cached briefly by the checker).

        Rate-limited per account (``proxy_checks_per_window``), and a refusal counts as a
        violation like a banned proxy: the check connects where the client says, and
        must not serve as a free port scanner."""
        assert self.proxy_checker is not None
        s = self.settings
        await self.policy.check_proxy_checks(caller.account_id, s.proxy_checks_per_window,
                                             s.proxy_check_window_s)
        login, password = task.get("proxyLogin"), task.get("proxyPassword")
        spec = ProxySpec(proxy[0], proxy[1], proxy[2], login or None, password or None)
        code = await self.proxy_checker.check(spec, website_host or "example.com")
        if code is not None:
            await self.policy.note_violation(caller.account_id, ip, PROXY_REFUSED)
            raise CapdError(code, "the proxy pre-flight check failed")

    # -- getTaskResult ----------------------------------------------------------------------
    async def _own_task(self, task_id: int | None, ip: str, caller: Caller) -> Task:
        """The caller's task ``task_id``, while its result is kept; else
        ERROR_NO_SUCH_CAPCHA_ID (counted as a violation)."""
        task = (await self.store.get_task(task_id, with_payload=False)
                if task_id is not None else None)
        if task is None or task.account_id != caller.account_id:
            await self.policy.note_violation(caller.account_id, ip, UNKNOWN_TASK)
            raise CapdError("ERROR_NO_SUCH_CAPCHA_ID")
        return task

    async def get_task_result(self, req: TaskResultRequest) -> TaskResult:
        """The task's outcome (spec §2); an expired result is ERROR_NO_SUCH_CAPCHA_ID, and
        polls count against the task's limits (spec §4)."""
        caller, _ = await self.authenticate(req)
        task = await self._own_task(req.task_id, req.ip, caller)
        if (task.ended_at is not None
                and self.clock() > task.ended_at + self.settings.result_ttl_s):
            await self.policy.note_violation(caller.account_id, req.ip, UNKNOWN_TASK)
            raise CapdError("ERROR_NO_SUCH_CAPCHA_ID", "the result has expired")
        await self.policy.check_poll(task.id, caller.account_id, req.ip)
        if task.state in (TaskState.QUEUED, TaskState.LEASED):
            return result_of(task)
        result = self._final_results.get(task.id)
        if result is None:
            if len(self._final_results) >= FINAL_RESULTS_KEPT:
                self._final_results.clear()
            result = self._final_results[task.id] = result_of(task)
        return result

    # -- getBalance and reports -------------------------------------------------------------
    async def get_balance(self, req: BalanceRequest) -> Balance:
        """Available balance: the ledger balance less what in-flight tasks reserve."""
        caller, _ = await self.authenticate(req)
        account = await self.store.account(caller.account_id)
        assert account is not None
        return Balance(from_units(account.balance_units - account.reserved_units))

    async def report(self, req: ReportRequest) -> None:
        """Spec §3 and §9: a report on the caller's solved task, once, within the report
        window; else ERROR_NO_SUCH_CAPCHA_ID.

        IMAGE and TOKEN take only their own family's tasks; BAD takes either (an image
        report refunds the charge, a token report is recorded for statistics); GOOD is
        accepted for a task solved within the window and changes nothing."""
        caller, _ = await self.authenticate(req)
        task = await self._own_task(req.task_id, req.ip, caller)
        now = self.clock()
        window_s = self.settings.report_window_s
        image = task.type in IMAGE_REPORT_TYPES
        if req.kind == ReportKind.GOOD:
            if (task.state != TaskState.SOLVED or task.ended_at is None
                    or now > task.ended_at + window_s):
                raise CapdError("ERROR_NO_SUCH_CAPCHA_ID", "not a solved task")
            return
        if req.kind != ReportKind.BAD and image != (req.kind == ReportKind.IMAGE):
            raise CapdError("ERROR_NO_SUCH_CAPCHA_ID", "not a reportable solved task")
        if not await self.store.report_task(task.id, caller.account_id, refund=image, now=now,
                                            window_s=window_s):
            raise CapdError("ERROR_NO_SUCH_CAPCHA_ID", "not a reportable solved task")
        for listener in self.report_listeners:
            listener(task)

    # -- anti-captcha's statistics methods: getQueueStats, getSpendingStats ----------------
    async def queue_stats(self, req: QueueStatsRequest) -> QueueLoad:
        """getQueueStats: solver slots, load, price and speed of one of anti-captcha's queue
        ids (no key needed; answers are cached ``QUEUE_STATS_CACHE_S``, as anti-captcha's)."""
        queue_id = req.queue_id
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
        self._queue_stats_cache[queue_id] = (now + QUEUE_STATS_CACHE_S, load)
        return load

    async def spending_stats(self, req: SpendingStatsRequest) -> list[SpendingHour]:
        """getSpendingStats: the caller's tasks and money per hour for 24 hours from the
        hour of ``date`` (default: the 24 hours up to now), optionally of one ``queue`` (an
        anti-captcha queue name or a capd task type) and one client ``ip``."""
        caller, _ = await self.authenticate(req)
        hour = 3600
        date = req.date.get()
        if date is None:
            start = (int(self.clock()) // hour - SPENDING_STATS_HOURS + 1) * hour
        elif date > 2**40:
            raise BadParameter("date", "not a unix timestamp")
        else:
            start = date // hour * hour
        queue = req.queue.get()
        types: tuple[str, ...] | None = None
        if queue:
            types = QUEUE_NAMES.get(queue) or ((queue,) if queue in TASK_TYPES else None)
            if types is None:
                raise BadParameter("queue", "not a queue name or task type")
        rows = await self.store.usage(caller.account_id, start,
                                      start + SPENDING_STATS_HOURS * hour, hour,
                                      ip=req.only_ip.get())
        return [SpendingHour(int(b.start), int(b.end), b.tasks, from_units(b.spent_units))
                for b in series(rows, start, SPENDING_STATS_HOURS, hour, types)]

    # -- finishing ----------------------------------------------------------------------------
    async def finish_task(self, task_id: int, *, solution: dict[str, Any] | None = None,
                          error_code: str | None = None, owner: str | None = None
                          ) -> Task | None:
        """Complete a task once (capture or release) and tell the listeners."""
        done = await self.store.finish_task(task_id, self.clock(), solution=solution,
                                            error_code=error_code, owner=owner,
                                            callback=self.callback_body)
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
