"""App factory: wires settings, store, solver and front doors into one ASGI app."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import orjson
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

from capd import console
from capd.api import capmonster, twocaptcha, workers
from capd.api.accesslog import access_log_middleware
from capd.api.errors import exception_handlers, json_response
from capd.api.middleware import BodyLimitMiddleware, ClientAddressMiddleware
from capd.api.openapi import openapi_document
from capd.config import Settings
from capd.constants import PRUNE_BATCH, PRUNE_EVERY_S
from capd.errors import CapdError
from capd.metrics import Metrics
from capd.modules.engine import with_modules
from capd.modules.library import Library
from capd.modules.library import default_dir as default_modules_dir
from capd.modules.samples import SampleBox
from capd.outbound.guard import AddressGuard, TargetGuard
from capd.outbound.outbox import OutboxSender
from capd.outbound.proxycheck import ProxyChecker
from capd.service import Service, result_of
from capd.service.retention import prune_batch
from capd.solving.builtin import BuiltinSolver
from capd.solving.dispatch import Dispatcher
from capd.solving.fallback import HumanFallback
from capd.solving.imagetask import IMAGE_TYPE
from capd.solving.ocr import load_recogniser
from capd.solving.ocr.base import Recogniser
from capd.solving.pool import OcrPool
from capd.store import open_store
from capd.store.base import Store, Task
from capd.workers import WorkerDesk, is_reader_owner

log = logging.getLogger("capd")

SWEEP_INTERVAL_S = 1.0


async def _sweeper(service: Service) -> None:
    """Fail tasks past their deadline, once a second; forget ended counters now and then;
    apply retention every PRUNE_EVERY_S, one bounded batch of each kind at a time, and
    every round while batches come back full (a backlog: more than PRUNE_BATCH tasks a
    minute would otherwise outgrow one batch a minute)."""
    rounds = 0
    next_prune = service.clock()
    while True:
        try:
            await service.expire_overdue()
            rounds += 1
            if rounds % 60 == 0:
                await service.store.sweep_counters(service.clock())
            now = service.clock()
            if now >= next_prune:
                next_prune = now + PRUNE_EVERY_S
                pruned = await prune_batch(service.store, service.settings, now, PRUNE_BATCH)
                if max(pruned.payloads_dropped, pruned.tasks_deleted) >= PRUNE_BATCH:
                    next_prune = now  # a backlog: the next batch next round, not in a minute
                if pruned.payloads_dropped or pruned.tasks_deleted:
                    log.info("retention: %d payloads dropped, %d tasks deleted",
                             pruned.payloads_dropped, pruned.tasks_deleted)
        except Exception:
            log.exception("deadline sweep failed")
        await asyncio.sleep(SWEEP_INTERVAL_S)


async def healthz(request: Request) -> Response:
    if not request.app.state.ready:
        return json_response({"status": "starting"}, 503)
    return json_response({"status": "ok"})


async def metrics(request: Request) -> Response:
    service: Service = request.app.state.service
    for task_type in ("ImageToTextTask",):
        depth = await service.store.queue_depth(task_type)
        service.metrics.set_gauge("capd_queue_depth", depth, type=task_type)
    return PlainTextResponse(service.metrics.render(),
                             media_type="text/plain; version=0.0.4; charset=utf-8")


async def openapi(request: Request) -> Response:
    return json_response(request.app.state.openapi)


async def user_agent(request: Request) -> Response:
    return PlainTextResponse(request.app.state.service.settings.actual_user_agent)


async def no_such_method(request: Request) -> Response:
    raise CapdError("ERROR_NO_SUCH_METHOD")


def create_app(settings: Settings, *, store: Store | None = None,
               recogniser: Recogniser | None = None, clock: Callable[[], float] = time.time,
               proxy_guard: Any = None, callback_guard: Any = None) -> Starlette:
    """Build the ASGI app. Nothing is opened until the app's lifespan starts."""
    store = store or open_store(settings.database_url)
    metrics_registry = Metrics()
    dispatcher = Dispatcher(store, clock, settings)
    proxy_guard = proxy_guard or AddressGuard(settings.allow_private_proxies)
    callback_guard = callback_guard or AddressGuard(settings.allow_private_callbacks)
    checker = None
    if settings.proxy_preflight:
        checker = ProxyChecker(proxy_guard, settings.proxy_check_timeout_s,
                               settings.proxy_check_cache_s)
    service = Service(settings, store, dispatcher, clock, metrics_registry, proxy_guard,
                      callback_guard, proxy_checker=checker,
                      target_guard=TargetGuard(settings.allow_private_targets))
    fallback = HumanFallback(store, dispatcher, clock, settings.human_fallback,
                             service.metrics)
    callbacks = OutboxSender(store, callback_guard, clock,
                             timeout_s=settings.callback_timeout_s,
                             retries=settings.callback_retries,
                             backoff_s=settings.callback_backoff_s,
                             concurrency=settings.callback_concurrency,
                             per_account=settings.callback_per_account)

    def callback_body(task: Task) -> str:
        """What a callback POSTs: getTaskResult's answer with the task's id (spec §8)."""
        payload = {**capmonster.result_payload(result_of(task)), "taskId": task.id}
        return orjson.dumps(payload).decode()

    # the body is written to the outbox with the finish itself; then wake the sender
    service.callback_body = callback_body
    service.finish_listeners.append(lambda task: callbacks.wake() if task.callback_url
                                    else None)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await store.migrate()
        await store.subscribe(dispatcher.notify)
        await callbacks.start()
        background = [asyncio.create_task(_sweeper(service))]
        pool = None
        if settings.builtin_ocr:
            engine = recogniser
            if engine is None:
                engine = await asyncio.to_thread(load_recogniser, settings.ocr_engine)
            # tasks naming a stored custom module read with it (capd/modules)
            engine = await asyncio.to_thread(
                with_modules, engine,
                settings.modules_dir or default_modules_dir(settings.database_url),
                settings.modules_poll_s)
            pool = OcrPool(engine, settings.ocr_threads)
            solver = BuiltinSolver(store, dispatcher, pool, clock, settings.ocr_lease_s,
                                   service.rules, service.finish_task, metrics_registry,
                                   fallback)
            background.append(asyncio.create_task(solver.run()))
        app.state.ready = True
        try:
            yield
        finally:
            app.state.ready = False
            for job in background:
                job.cancel()
            await asyncio.gather(*background, return_exceptions=True)
            await callbacks.stop()
            if pool is not None:
                pool.close()
            await store.close()

    routes = [
        *capmonster.routes(),
        *workers.routes(),
        Route("/healthz", healthz, methods=["GET"]),
        Route("/metrics", metrics, methods=["GET"]),
        Route("/openapi.json", openapi, methods=["GET"]),
        Route("/api/useragent/actual", user_agent, methods=["GET"]),
        *twocaptcha.routes(),
        *console.routes(),  # the web console: GET / and /console/ (capd/console)
        Route("/{path:path}", no_such_method, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
    ]
    middleware = [
        Middleware(ClientAddressMiddleware, trusted_proxies=settings.trusted_proxies),
        *access_log_middleware(settings.access_log),
        Middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes,
                   create_paths=capmonster.CREATE_PATHS, text_paths=twocaptcha.UPLOAD_PATHS,
                   read_timeout_s=settings.body_read_timeout_s),
    ]
    app = Starlette(routes=routes, middleware=middleware, lifespan=lifespan,
                    exception_handlers=exception_handlers())
    app.state.service = service
    app.state.callbacks = callbacks
    # custom modules: an ImageToText task of a stored module answered through the worker
    # protocol is kept as a labelled sample (not when a `capd worker` answered: that is
    # model output, not a label); a report that it was wrong drops it
    samples = SampleBox(Library(settings.modules_dir
                                or default_modules_dir(settings.database_url)),
                        service.rules, settings.payload_retention_s, clock)

    async def finish_by_worker(task_id: int, **outcome: Any) -> Task | None:
        done = await service.finish_task(task_id, **outcome)
        if (done is not None and done.type == IMAGE_TYPE and settings.module_samples
                and not is_reader_owner(outcome.get("owner"))):
            await asyncio.to_thread(samples.keep, done)
        return done

    service.report_listeners.append(samples.forget)
    app.state.desk = WorkerDesk(store, dispatcher, clock, settings, finish_by_worker,
                                fallback=fallback)
    app.state.ready = False
    app.state.openapi = openapi_document()
    return app
