"""The callback sender (spec §8): POSTs a finished task's result to its ``callbackUrl``.

``post_callback`` is one attempt (guard, then the checked address); the server delivers
through ``capd.outbound.outbox`` (durable, per-account fair), which uses it. The
``CallbackSender`` below is the in-memory variant, for a caller without a store.

Each callback is a job on a bounded in-memory queue, taken by ``concurrency`` sender
tasks. One attempt is: check the URL's host with the guard, then POST to the checked
address itself, all within ``timeout_s``. Success is any 2xx. Otherwise the job is put back
after ``backoff_s``, ``2·backoff_s`` … by a timer, so a job waiting to retry holds no
sender; a slow receiver holds one sender for at most ``timeout_s``. A host the guard
refuses is given up at once (no retry). Nothing survives a restart: callbacks are best
effort, the result stays available through getTaskResult.

Logs never show a whole URL (its query or user part may hold secrets): only
``scheme://host/path``. That is also why requests go through an httpx transport rather
than an ``AsyncClient``: the client logs every request's full URL at INFO (and would
add cookies, redirects and environment proxies, none of which a callback wants).
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
from dataclasses import dataclass
from typing import Any

import httpx
import orjson

from capd.outbound.guard import AddressGuard

log = logging.getLogger("capd.outbound")

USER_AGENT = "capd-callback"


@dataclass(eq=False)
class _Job:
    url: httpx.URL
    body: bytes
    attempts: int = 0
    timer: asyncio.TimerHandle | None = None  # set while waiting to retry


def redacted(url: str | httpx.URL) -> str:
    """``scheme://host/path`` of a URL, for logs."""
    try:
        u = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return "<invalid url>"
    host = f"[{u.host}]" if ":" in u.host else u.host
    return f"{u.scheme}://{host}{u.path}"


class CallbackSender:
    """Delivers callbacks in the background; counters ``delivered``, ``failed`` (gave up)
    and ``dropped`` (queue full, or still pending at ``stop``) are for tests and metrics.

    ``verify`` is passed to httpx (tests give an SSL context that trusts their own CA).
    """

    def __init__(self, guard: AddressGuard, timeout_s: float = 2.0, retries: int = 3,
                 backoff_s: float = 1.0, concurrency: int = 8, queue_size: int = 10_000, *,
                 verify: ssl.SSLContext | bool = True) -> None:
        self._guard = guard
        self._timeout_s = timeout_s
        self._retries = retries
        self._backoff_s = backoff_s
        self._concurrency = concurrency
        self._verify = verify
        self._queue: asyncio.Queue[_Job] = asyncio.Queue(maxsize=queue_size)
        self._workers: list[asyncio.Task[None]] = []
        self._waiting: set[_Job] = set()  # jobs whose retry timer is running
        self._transport: httpx.AsyncHTTPTransport | None = None
        self._pending = 0  # queued + in flight + waiting to retry
        self._idle = asyncio.Event()
        self._idle.set()
        self.delivered = 0
        self.failed = 0
        self.dropped = 0

    async def start(self) -> None:
        """Start the sender tasks on the running loop (a second call does nothing)."""
        if self._workers:
            return
        self._transport = callback_transport(self._verify)
        self._workers = [asyncio.create_task(self._work(), name=f"callback-sender-{i}")
                         for i in range(self._concurrency)]

    async def stop(self) -> None:
        """Cancel the senders; callbacks still pending are dropped and counted."""
        for job in self._waiting:
            if job.timer is not None:
                job.timer.cancel()
        self._waiting.clear()
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        while not self._queue.empty():
            self._queue.get_nowait()
            self._queue.task_done()
        if self._transport is not None:
            await self._transport.aclose()
            self._transport = None
        if self._pending:
            log.warning("callback sender stopped: %d pending callbacks dropped", self._pending)
            self.dropped += self._pending
            self._pending = 0
        self._idle.set()

    def submit(self, url: str, payload: dict[str, Any]) -> bool:
        """Queue one POST of ``payload`` as JSON to ``url``; never blocks; False (and a log
        line without the URL's query string) when the queue is full or ``url`` is not an
        http(s) URL with a host (that one counts as failed).

        The payload is serialised here (orjson, as getTaskResult renders it).
        """
        body = orjson.dumps(payload)
        parsed = callback_url(url)
        if parsed is None:
            self.failed += 1
            log.warning("callback to %s not sent: not an http(s) URL with a host",
                        redacted(url))
            return False
        if not self._enqueue(_Job(parsed, body)):
            return False
        self._pending += 1
        self._idle.clear()
        return True

    def snapshot(self) -> dict[str, Any]:
        """What this process knows of its callbacks (the store keeps no record of them):
        how many are pending, the counters, and the (redacted) URLs waiting to retry."""
        return {"pending": self._pending, "queued": self._queue.qsize(),
                "delivered": self.delivered, "failed": self.failed, "dropped": self.dropped,
                "retrying": sorted((redacted(job.url), job.attempts) for job in self._waiting)}

    async def drain(self) -> None:
        """Wait until every submitted callback is delivered, given up or dropped."""
        await self._idle.wait()

    def _enqueue(self, job: _Job) -> bool:
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self.dropped += 1
            log.warning("callback to %s dropped: queue full", redacted(job.url))
            return False
        return True

    def _finish(self) -> None:
        self._pending -= 1
        if self._pending <= 0:
            self._pending = 0
            self._idle.set()

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                await self._run(job)
            finally:
                self._queue.task_done()

    async def _run(self, job: _Job) -> None:
        job.attempts += 1
        try:
            outcome = await asyncio.wait_for(self._attempt(job), self._timeout_s)
        except Exception as exc:  # timeout, transport error, anything: a failed attempt
            outcome = type(exc).__name__  # not str(exc): it may quote the URL
        if outcome is True:
            self.delivered += 1
            self._finish()
            return
        if outcome is None:
            self.failed += 1
            log.warning("callback to %s given up: host is internal or does not resolve",
                        redacted(job.url))
            self._finish()
            return
        if job.attempts > self._retries:
            self.failed += 1
            log.warning("callback to %s given up after %d attempts (last: %s)",
                        redacted(job.url), job.attempts, outcome)
            self._finish()
            return
        delay = self._backoff_s * 2 ** (job.attempts - 1)
        log.debug("callback to %s failed (%s), retry in %.2f s",
                  redacted(job.url), outcome, delay)
        job.timer = asyncio.get_running_loop().call_later(delay, self._retry, job)
        self._waiting.add(job)

    def _retry(self, job: _Job) -> None:
        self._waiting.discard(job)
        job.timer = None
        if not self._enqueue(job):
            self._finish()

    async def _attempt(self, job: _Job) -> bool | str | None:
        assert self._transport is not None
        return await post_callback(self._transport, self._guard, job.url, job.body,
                                   self._timeout_s)


def callback_transport(verify: ssl.SSLContext | bool = True) -> httpx.AsyncHTTPTransport:
    """The transport callbacks go through (one per sender, closed when it stops)."""
    return httpx.AsyncHTTPTransport(
        verify=verify, trust_env=False,
        # no keep-alive: pooled connections are keyed by IP, and a TLS connection made
        # for one host name must never carry a request for another name on that IP
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=0))


def callback_url(url: str) -> httpx.URL | None:
    """``url`` parsed, when it is an http(s) URL with a host; else None."""
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return None
    return parsed


async def post_callback(transport: httpx.AsyncHTTPTransport, guard: AddressGuard,
                        url: httpx.URL, body: bytes, timeout_s: float) -> bool | str | None:
    """One attempt: True when delivered (2xx); None when the guard refuses the host;
    else why it failed. The caller bounds the whole attempt by ``timeout_s``.

    Redirects are not followed (one would lead past the guard): a 3xx is a failure.
    """
    host = url.raw_host.decode("ascii")
    addrs = await guard.public_addresses(host)
    if addrs is None:
        return None
    headers = {"Host": url.netloc.decode("ascii"), "Content-Type": "application/json",
               "User-Agent": USER_AGENT}
    if url.username or url.password:
        login = f"{url.username}:{url.password}".encode()
        headers["Authorization"] = "Basic " + base64.b64encode(login).decode()
    extensions: dict[str, Any] = {"timeout": httpx.Timeout(timeout_s).as_dict()}
    if url.scheme == "https":
        extensions["sni_hostname"] = host  # TLS (SNI, certificate) still checks the name
    why = "no address"
    for addr in addrs:
        request = httpx.Request("POST", url.copy_with(host=str(addr)), headers=headers,
                                content=body, extensions=extensions)
        try:
            response = await transport.handle_async_request(request)
        except httpx.ConnectError:  # refused, unreachable, or the TLS handshake failed
            why = "ConnectError"
            continue  # try the host's next address
        try:
            if 200 <= response.status_code < 300:
                return True
            return f"HTTP {response.status_code}"
        finally:
            await response.aclose()  # the body is never read
    return why
