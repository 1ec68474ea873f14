"""The account holder's console in the browser: sign in, balance, usage, keys, whitelist."""

from __future__ import annotations

from typing import Any

from tests.console.conftest import sign_in
from tests.helpers import LiveServer, image_task


def test_sign_in_shows_the_balance(new_page: Any, server: LiveServer) -> None:
    key = server.new_account("12.5", name="Acme")
    page = new_page()
    sign_in(page, server, key)
    assert page.url == f"{server.url}/console/"
    assert page.inner_text("h1").startswith("Acme")
    assert page.inner_text("#available") == "12.50 USD"
    assert page.inner_text("#reserved") == "0.00 USD"
    assert "opening balance" in page.inner_text("table")


def test_the_key_never_travels_in_a_url(new_page: Any, server: LiveServer) -> None:
    key = server.new_account("1")
    page = new_page()
    urls: list[str] = []
    page.on("request", lambda request: urls.append(request.url))
    sign_in(page, server, key)
    assert urls and not [u for u in urls if key in u]


def test_a_wrong_key_is_refused(new_page: Any, server: LiveServer) -> None:
    page = new_page()
    sign_in(page, server, "0" * 32)
    assert "No account holds that key" in page.inner_text("[role=alert]")
    assert page.query_selector("#key") is not None


def test_usage_charts_count_the_tasks_of_the_day(new_page: Any, server: LiveServer) -> None:
    key = server.new_account("1")
    task_id = server.call("createTask", {"clientKey": key, "task": image_task()})["taskId"]
    assert server.wait_result(key, task_id)["status"] == "ready"
    page = new_page()
    sign_in(page, server, key)
    bars = page.query_selector_all("figure.chart svg rect")
    assert len(bars) == 2  # one day with one type, in the tasks and the spending chart
    titles = [b.text_content() for b in page.query_selector_all("figure.chart svg rect title")]
    assert any("ImageToTextTask: 1" in t for t in titles)
    row = page.inner_text("section table tbody tr")
    assert "ImageToTextTask" in row and "100.0 %" in row
    assert page.inner_text("#solve-rate") == "100.0 %"
    assert page.inner_text("#spent") == "0.0003 USD"


def test_recent_tasks_list_type_state_and_cost(new_page: Any, server: LiveServer) -> None:
    key = server.new_account("1")
    task_id = server.call("createTask", {"clientKey": key, "task": image_task()})["taskId"]
    server.wait_result(key, task_id)
    page = new_page()
    sign_in(page, server, key)
    page.click("text=Tasks")
    row = page.inner_text("tbody tr")
    assert str(task_id) in row and "ImageToTextTask" in row and "solved" in row
    assert "0.0003" in row
    assert "<img" not in page.content() and "base64" not in page.content()


def test_rotate_a_key_shows_the_new_key_once(new_page: Any, server: LiveServer) -> None:
    key = server.new_account("1")
    page = new_page()
    sign_in(page, server, key)
    page.click("text=Keys & access")
    page.click("button:has-text('Rotate')")
    new_key = page.inner_text("#new-key")
    assert len(new_key) == 32 and new_key != key
    assert server.call("getBalance", {"clientKey": key})["errorCode"] == \
        "ERROR_KEY_DOES_NOT_EXIST"
    assert server.call("getBalance", {"clientKey": new_key})["balance"] == 1.0
    page.reload()  # a GET now: the page no longer holds the key
    assert page.query_selector("#new-key") is None
    assert new_key not in page.content()
    assert page.inner_text("h1") == "Keys and access"  # the session follows the new key


def test_whitelist_add_and_remove(new_page: Any, server: LiveServer) -> None:
    key = server.new_account("1")
    page = new_page()
    sign_in(page, server, key)
    page.goto(f"{server.url}/console/access")
    page.fill("#network", "127.0.0.0/8")
    page.click("button:has-text('Add')")
    page.fill("#network", "10.1.2.3")
    page.click("button:has-text('Add')")
    assert page.inner_text("ul.plain").split() == ["10.1.2.3/32", "Remove", "127.0.0.0/8",
                                                   "Remove"]
    assert server.call("getBalance", {"clientKey": key})["errorId"] == 0
    page.click("li:has-text('10.1.2.3/32') button:has-text('Remove')")
    assert "10.1.2.3" not in page.inner_text("ul.plain")
    assert "127.0.0.0/8" in page.inner_text("ul.plain")


def test_a_whitelist_without_this_address_closes_the_console(new_page: Any,
                                                             server: LiveServer) -> None:
    key = server.new_account("1")
    page = new_page()
    sign_in(page, server, key)
    page.goto(f"{server.url}/console/access")
    page.fill("#network", "10.1.2.3")
    page.click("button:has-text('Add')")
    assert page.url == f"{server.url}/console/"  # signed out here, as the key is refused
    assert server.call("getBalance", {"clientKey": key})["errorCode"] == "ERROR_IP_NOT_ALLOWED"
    sign_in(page, server, key)
    assert "not on this account's IP whitelist" in page.inner_text("[role=alert]")


def test_a_bad_whitelist_entry_is_explained(new_page: Any, server: LiveServer) -> None:
    key = server.new_account("1")
    page = new_page()
    sign_in(page, server, key)
    page.goto(f"{server.url}/console/access")
    page.fill("#network", "not-an-address")
    page.click("button:has-text('Add')")
    assert "not an IP address" in page.inner_text("[role=alert]")


def test_bans_show_reason_and_time_left(new_page: Any, server: LiveServer) -> None:
    key = server.new_account("1")
    account_id = server.admin(lambda store: store.account_for_key(key)).id
    now = server.clock()
    server.admin(lambda store: store.add_ban("account_ip", "10.9.9.9", account_id,
                                             "requests at zero balance", now, now + 600))
    page = new_page()
    sign_in(page, server, key)
    page.goto(f"{server.url}/console/access")
    row = page.inner_text("tr:has-text('10.9.9.9')")
    assert "requests at zero balance" in row and "10 min left" in row


def test_sign_out_ends_the_session(new_page: Any, server: LiveServer) -> None:
    key = server.new_account("1")
    page = new_page()
    sign_in(page, server, key)
    page.click("button:has-text('Sign out')")
    assert page.query_selector("#key") is not None
    page.goto(f"{server.url}/console/access")
    assert page.url == f"{server.url}/console/"
