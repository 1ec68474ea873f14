"""Screenshots of the console's main pages for the README (docs/img/), from a live capd
filled with a month of made-up traffic.

    PYTHONPATH=. python -m tests.console.screenshots [docs/img]
"""

from __future__ import annotations

import random
import sys
import tempfile
from pathlib import Path
from typing import Any

from capd.console.tokens import create_admin_token
from capd.store.base import NewTask, Store
from tests.console.conftest import CHROMIUM, CHROMIUM_ARGS, sign_in, sign_in_admin
from tests.helpers import FakeClock, LiveServer, make_settings

DAY_S = 86400
TYPES = {"ImageToTextTask": (30_000, 0.2, 2.0), "RecaptchaV2TaskProxyless": (60_000, 0.08, 20),
         "TurnstileTaskProxyless": (60_000, 0.05, 9)}


async def fill(store: Store, now: float) -> tuple[str, str]:
    """A month of tasks for one account, a ledger, a ban; returns (key, admin token)."""
    rng = random.Random(16)
    key = "c0ffee" + "0" * 22 + "beef"
    account_id = await store.create_account("Acme Scraping Ltd", key, now - 40 * DAY_S)
    await store.adjust_balance(account_id, 50 * 10**8, "topup", "operator", "invoice 2026-10",
                               now - 40 * DAY_S)
    await store.adjust_balance(account_id, 25 * 10**8, "topup", "console:alice",
                               "invoice 2026-11", now - 6 * DAY_S)
    ids = iter(range(10_000_000, 20_000_000))
    for day in range(30, -1, -1):
        for ttype, (price, share, seconds) in TYPES.items():
            count = int(rng.gauss(60 + 25 * (day % 7 < 5), 12) * share * 10)
            for _ in range(max(0, count)):
                created = now - day * DAY_S - rng.uniform(0, DAY_S if day else 3 * 3600)
                task_id = await store.create_task(NewTask(
                    account_id, ttype, {}, {}, price, created, created + 120, "203.0.113.7"),
                    lambda: next(ids))
                took = max(0.3, rng.gauss(seconds, seconds / 4))
                if rng.random() < 0.93:
                    await store.finish_task(task_id, created + took, solution={"text": "x"})
                else:
                    await store.finish_task(task_id, created + took,
                                            error_code="ERROR_CAPTCHA_UNSOLVABLE")
    await store.whitelist_add(account_id, "203.0.113.0/24")
    await store.whitelist_add(account_id, "127.0.0.1/32")
    await store.add_ban("account_ip", "198.51.100.23", account_id, "polls of unknown task ids",
                        now - 120, now + 480)
    await store.add_ban("ip", "192.0.2.55", None, "repeated requests with unknown keys",
                        now - 300, now + 300)
    await store.create_account("Beta Testers", "d" * 32, now - 3 * DAY_S)
    _, token = await create_admin_token(store, lambda: now, "alice")
    return key, token


def main(out: str = "docs/img") -> None:
    from playwright.sync_api import sync_playwright

    folder = Path(out)
    folder.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp())
    clock = FakeClock()
    server = LiveServer(make_settings(tmp, builtin_ocr=False), clock)
    server.start(None)
    key, token = server.admin(lambda store: fill(store, clock()))
    worker = server.new_worker_token()
    server.call("worker/v1/lease", {"workerToken": worker,
                                    "types": ["RecaptchaV2TaskProxyless", "TurnstileTaskProxyless"]})
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            page: Any = browser.new_page(viewport={"width": 1200, "height": 900})
            sign_in(page, server, key)
            page.screenshot(path=str(folder / "console-account.png"), full_page=True)
            page.goto(f"{server.url}/console/access")
            page.screenshot(path=str(folder / "console-access.png"), full_page=True)
            admin: Any = browser.new_context(viewport={"width": 1200, "height": 900}).new_page()
            sign_in_admin(admin, server, token)
            admin.screenshot(path=str(folder / "console-operator.png"), full_page=True)
            admin.goto(f"{server.url}/console/admin/accounts/1")
            admin.screenshot(path=str(folder / "console-operator-account.png"))
            browser.close()
    finally:
        server.stop()
    for png in sorted(folder.glob("console-*.png")):
        print(f"{png} {png.stat().st_size // 1024} KiB")


if __name__ == "__main__":
    main(*sys.argv[1:])
