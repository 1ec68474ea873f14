"""Shared test tools: a controllable clock, captcha images, a live server on loopback."""

from __future__ import annotations

import asyncio
import base64
import io
import socket
import threading
import time
import zlib
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, TypeVar

import httpx
import uvicorn
from PIL import Image, ImageDraw, ImageFont

from capd.api.app import create_app
from capd.config import Settings, load_settings
from capd.domain.keys import new_key
from capd.domain.money import to_units
from capd.solving.ocr.base import Recogniser
from capd.store import open_store
from capd.store.base import Store

T = TypeVar("T")


class FakeClock:
    """A clock tests move by hand; starts at the real time so ids and logs look sane."""

    def __init__(self, start: float | None = None) -> None:
        self.now = time.time() if start is None else start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        with self._lock:
            return self.now

    def advance(self, seconds: float) -> None:
        with self._lock:
            self.now += seconds


def captcha_png(text: str, size: int = 36, width: int | None = None) -> bytes:
    """A plain, readable captcha image of ``text`` (black on white)."""
    font = ImageFont.load_default(size=size)
    w = width or max(120, int(size * 0.75 * len(text)) + 30)
    im = Image.new("RGB", (w, int(size * 1.7)), "white")
    ImageDraw.Draw(im).text((10, size // 4), text, fill="black", font=font)
    out = io.BytesIO()
    im.save(out, "PNG")
    return out.getvalue()


def blank_png(width: int = 120, height: int = 40) -> bytes:
    """A readable picture with nothing on it: it passes createTask's image checks, and
    the recogniser reads no text from it, so its task fails ERROR_CAPTCHA_UNSOLVABLE."""
    out = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(out, "PNG")
    return out.getvalue()


def png_of_size(size: int) -> bytes:
    """A valid 1x1 PNG of exactly ``size`` bytes (at least 83), padded with a tEXt chunk."""
    out = io.BytesIO()
    Image.new("L", (1, 1), 255).save(out, "PNG")
    png = out.getvalue()
    iend = png.rindex(b"IEND") - 4  # the IEND chunk's length field
    text = b"pad\x00" + b"x" * (size - len(png) - 12 - 4)
    chunk = b"tEXt" + text
    padded = (png[:iend] + len(text).to_bytes(4, "big") + chunk
              + zlib.crc32(chunk).to_bytes(4, "big") + png[iend:])
    assert len(padded) == size, (len(padded), size)
    return padded


def png_bomb(width: int = 100_000, height: int = 100_000) -> bytes:
    """A tiny PNG (a couple of hundred bytes) whose header declares ``width`` x ``height``
    pixels: a decompression bomb for a decoder that trusts the header."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (len(data).to_bytes(4, "big") + kind + data
                + zlib.crc32(kind + data).to_bytes(4, "big"))
    header = width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 0, 0, 0, 0])
    rows = zlib.compress(b"\x00" * 4096, 9)  # the start of the rows: zeros compress away
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows)
            + chunk(b"IEND", b""))


def image_as(fmt: str, text: str = "ab12") -> bytes:
    """The captcha of ``text`` saved in Pillow's format ``fmt`` (PNG, JPEG, GIF, BMP...)."""
    out = io.BytesIO()
    Image.open(io.BytesIO(captcha_png(text, size=20))).convert("RGB").save(out, fmt)
    return out.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def run_sync(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class LiveServer:
    """capd running in a background thread on a loopback port, with an admin handle on the
    same database file."""

    settings: Settings
    clock: FakeClock
    url: str = ""
    client: httpx.Client = field(init=False)
    _server: uvicorn.Server | None = None
    _thread: threading.Thread | None = None

    port: int = 0

    def start(self, recogniser: Recogniser | None, **app_kwargs: Any) -> None:
        if "store" not in app_kwargs:  # the fake clock rules the leases, on PostgreSQL too
            app_kwargs["store"] = open_store(self.settings.database_url, database_clock=False)
        app = create_app(self.settings, recogniser=recogniser, clock=self.clock, **app_kwargs)
        config = uvicorn.Config(app, host="127.0.0.1", port=0, loop="asyncio",
                                lifespan="on", log_level="warning", access_log=False,
                                proxy_headers=False, **self._tls_options())
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"capd test server ({self._scheme()}) did not start")
            time.sleep(0.01)
        self.port = int(self._server.servers[0].sockets[0].getsockname()[1])
        self.url = f"{self._scheme()}://127.0.0.1:{self.port}"
        self.client = httpx.Client(base_url=self.url, timeout=10, **self._client_options())
        self.app = app

    # plain http here; tests/compat's TlsLiveServer overrides these three
    def _scheme(self) -> str:
        return "http"

    def _tls_options(self) -> dict[str, Any]:
        return {}

    def _client_options(self) -> dict[str, Any]:
        return {}

    def stop(self) -> None:
        self.client.close()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout=15)

    # -- admin helpers (a second connection to the same database) ---------------------------
    def _store(self) -> Store:
        return open_store(self.settings.database_url)

    def admin(self, fn: Callable[[Any], Coroutine[Any, Any, T]]) -> T:
        async def go() -> T:
            store = self._store()
            try:
                return await fn(store)
            finally:
                await store.close()

        return run_sync(go())

    def new_account(self, balance: str = "10", name: str = "test") -> str:
        key = new_key()

        async def create(store: Store) -> None:
            account_id = await store.create_account(name, key, self.clock())
            if Decimal(balance):
                await store.adjust_balance(account_id, to_units(Decimal(balance)), "topup",
                                           "test", "opening balance", self.clock())

        self.admin(create)
        return key

    def new_worker_token(self, types: tuple[str, ...] | None = None) -> str:
        from capd.workers import new_worker_token, token_digest

        token = new_worker_token()
        self.admin(lambda store: store.create_worker_token(token_digest(token), "test", types,
                                                           self.clock()))
        return token

    def call(self, method: str, payload: Any, **kwargs: Any) -> dict[str, Any]:
        response = self.client.post(f"/{method}", json=payload, **kwargs)
        assert response.status_code == 200, response.text
        return response.json()

    def wait_result(self, key: str, task_id: int, timeout_s: float = 20) -> dict[str, Any]:
        """Poll like a client (within the default rate) until the task is final."""
        deadline = time.monotonic() + timeout_s
        while True:
            answer = self.call("getTaskResult", {"clientKey": key, "taskId": task_id})
            if answer.get("status") != "processing":
                return answer
            if time.monotonic() > deadline:
                raise AssertionError(f"task {task_id} still processing after {timeout_s} s")
            time.sleep(0.11)

    def ledger_consistent(self, key: str) -> tuple[int, int, int]:
        """(balance, reserved, ledger sum) of the account holding ``key``."""
        async def read(store: Store) -> tuple[int, int, int]:
            account = await store.account_for_key(key)
            assert account is not None
            return account.balance_units, account.reserved_units, await store.ledger_sum(
                account.id)

        return self.admin(read)


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    return load_settings(environ={}, overrides={
        # no proxy pre-flight unless a test asks: tests send traffic only to loopback
        "database_url": f"sqlite:///{tmp_path}/capd.db", "ocr_threads": 2,
        "proxy_preflight": False, **overrides})


class GatedRecogniser:
    """The real engine behind a gate: reads wait until the test opens it (holds tasks
    in flight deterministically, without sleeping)."""

    def __init__(self, inner: Recogniser) -> None:
        self.inner = inner
        self.name = f"gated-{inner.name}"
        self.gate = threading.Event()
        self.entered = threading.Semaphore(0)

    def read(self, image: bytes, spec: Any) -> Any:
        self.entered.release()
        if not self.gate.wait(timeout=60):
            raise RuntimeError("gate never opened")
        return self.inner.read(image, spec)


SITEKEY = "6Le-wvkSAAAAAPBMRTvw0Q4Muexq9bi0DJwx_mJ-"
CHROME_UA = ("Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
             "Chrome/156.0.0.0 Safari/537.36")


def image_task(text: str = "aB3k9", **fields: Any) -> dict[str, Any]:
    return {"type": "ImageToTextTask", "body": b64(captcha_png(text)), **fields}


def record_stretches(monkeypatch: Any, obj: Any, method: str) -> list[float]:
    """Wrap ``obj.method(image, stretch=1.0)`` so that each call's stretch is recorded:
    how many times, and how wide, an engine read an image."""
    calls: list[float] = []
    real = getattr(obj, method)

    def wrapper(image: Any, stretch: float = 1.0) -> Any:
        calls.append(stretch)
        return real(image, stretch)

    monkeypatch.setattr(obj, method, wrapper)
    return calls


def record_greys(monkeypatch: Any, module: Any, crops: list[bool] | None = None,
                 stretches: list[float] | None = None) -> list[str]:
    """Wrap ``module.grey64`` so that each call's grey mode is recorded: how an engine
    turned an image's colour grey (and, into ``crops``, whether it cut the text's band;
    into ``stretches``, how much wider than its aspect ratio it made the image)."""
    modes: list[str] = []
    real = module.grey64

    def spy(img: Any, stretch: float = 1.0, grey: str = "luminance",
            crop: bool = False) -> Any:
        modes.append(grey)
        if crops is not None:
            crops.append(crop)
        if stretches is not None:
            stretches.append(stretch)
        return real(img, stretch, grey, crop)

    monkeypatch.setattr(module, "grey64", spy)
    return modes
