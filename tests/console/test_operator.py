"""The operator's console in the browser: sign in with an admin token, accounts (find,
create, top up), bans (lift), blocklist, dashboard, settings."""

from __future__ import annotations

from typing import Any

from tests.console.conftest import admin_token, sign_in_admin
from tests.helpers import LiveServer, image_task


def account_id(server: LiveServer, key: str) -> int:
    return int(server.admin(lambda store: store.account_for_key(key)).id)


def test_operator_signs_in_with_an_admin_token(new_page: Any, server: LiveServer) -> None:
    page = new_page()
    sign_in_admin(page, server, admin_token(server))
    assert page.inner_text("h1") == "Dashboard"
    assert "Accounts" in page.inner_text("header nav")


def test_a_wrong_admin_token_is_refused(new_page: Any, server: LiveServer) -> None:
    page = new_page()
    sign_in_admin(page, server, "ab" * 32)
    assert "not a live admin token" in page.inner_text("[role=alert]")


def test_operator_tops_up_an_account_with_a_note(new_page: Any, server: LiveServer) -> None:
    key = server.new_account("1", name="Acme")
    page = new_page()
    sign_in_admin(page, server, admin_token(server, "alice"))
    page.goto(f"{server.url}/console/admin/accounts/{account_id(server, key)}")
    page.fill("#amount", "2.5")
    page.fill("#note", "invoice 42")
    page.click("button:has-text('Apply')")
    assert page.inner_text("#balance") == "3.50 USD"
    row = page.inner_text("tr:has-text('invoice 42')")
    assert "topup" in row and "2.50" in row and "console:alice" in row
    assert server.call("getBalance", {"clientKey": key})["balance"] == 3.5
    balance, _, ledger_sum = server.ledger_consistent(key)
    assert balance == ledger_sum


def test_an_adjustment_below_the_reservation_is_refused(new_page: Any,
                                                        server: LiveServer) -> None:
    key = server.new_account("1")
    page = new_page()
    sign_in_admin(page, server, admin_token(server))
    page.goto(f"{server.url}/console/admin/accounts/{account_id(server, key)}")
    page.fill("#amount", "-5")
    page.fill("#note", "too much")
    page.click("button:has-text('Apply')")
    assert "below what running tasks reserve" in page.inner_text("[role=alert]")
    assert server.call("getBalance", {"clientKey": key})["balance"] == 1.0


def test_operator_finds_and_creates_accounts(new_page: Any, server: LiveServer) -> None:
    key = server.new_account("1", name="Findme")
    page = new_page()
    sign_in_admin(page, server, admin_token(server))
    page.goto(f"{server.url}/console/admin/accounts")
    page.fill("#q", str(account_id(server, key)))
    page.click("button:has-text('Search')")
    assert "Findme" in page.inner_text("tbody")
    page.fill("#name", "Newco")
    page.fill("#balance", "7")
    page.click("button:has-text('Create account')")
    new_key = page.inner_text("#new-key")
    assert server.call("getBalance", {"clientKey": new_key})["balance"] == 7.0


def test_operator_lifts_a_ban(new_page: Any, server: LiveServer) -> None:
    now = server.clock()
    server.admin(lambda store: store.add_ban("ip", "10.7.7.7", None,
                                             "repeated requests with unknown keys", now,
                                             now + 600))
    page = new_page()
    sign_in_admin(page, server, admin_token(server))
    page.click("text=Bans")
    assert "10.7.7.7" in page.inner_text("section:has-text('Active')")
    page.click("tr:has-text('10.7.7.7') button:has-text('Lift')")
    assert "10.7.7.7" not in page.inner_text("section:has-text('Active')")
    assert "10.7.7.7" in page.inner_text("section:has-text('History')")
    [ban] = server.admin(lambda store: store.bans(server.clock(), active_only=False))
    assert ban.lifted_at is not None


def test_operator_edits_the_blocklist(new_page: Any, server: LiveServer) -> None:
    page = new_page()
    sign_in_admin(page, server, admin_token(server))
    page.goto(f"{server.url}/console/admin/blocklist")
    page.fill("#domain", "Bad.Example.")
    page.click("button:has-text('Block')")
    assert "bad.example" in page.inner_text("table")
    assert server.admin(lambda store: store.blocked_domain("www.bad.example")) == "bad.example"
    page.click("tr:has-text('bad.example') button:has-text('Unblock')")
    assert page.query_selector("table") is None


def test_dashboard_shows_queues_workers_and_callbacks(new_page: Any,
                                                      server: LiveServer) -> None:
    key = server.new_account("1")
    task_id = server.call("createTask", {"clientKey": key, "task": image_task()})["taskId"]
    server.wait_result(key, task_id)
    token = server.new_worker_token()
    server.call("worker/v1/lease", {"workerToken": token, "types": ["TurnstileTaskProxyless"]})
    page = new_page()
    sign_in_admin(page, server, admin_token(server))
    queues = page.inner_text("section:has-text('Queues')")
    assert "ImageToTextTask" in queues
    workers = page.inner_text("section:has-text('Workers')")
    assert "TurnstileTaskProxyless" in workers and "online" in workers
    assert "pending" in page.inner_text("section:has-text('Pending callbacks')")


def test_settings_are_shown_without_the_database_password(new_page: Any,
                                                          server: LiveServer) -> None:
    page = new_page()
    sign_in_admin(page, server, admin_token(server))
    page.goto(f"{server.url}/console/admin/settings")
    assert "ImageToTextTask" in page.inner_text("table")
    assert "max_polls_per_task" in page.content()
