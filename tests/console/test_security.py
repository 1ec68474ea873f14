"""The console's security properties: cookie flags, CSRF, CSP, escaping, isolation of
accounts and of the operator's pages, sessions ending, sign-in failures toward bans."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest

from capd.constants import CONSOLE_SESSION_S
from tests.console.conftest import admin_token, cookies_for, csrf_of, sign_in, sign_in_admin
from tests.helpers import LiveServer

HOSTILE = '<script>window.pwned=1</script><img src=x onerror="window.pwned=2">'


def account_id(server: LiveServer, key: str) -> int:
    return int(server.admin(lambda store: store.account_for_key(key)).id)


def raw_client(server: LiveServer, page: Any) -> httpx.Client:
    """An HTTP client holding the browser page's cookies (to send what a form would not)."""
    return httpx.Client(base_url=server.url, cookies=cookies_for(page), timeout=10,
                        follow_redirects=False)


def test_session_cookie_flags(new_page: Any, server: LiveServer) -> None:
    page = new_page()
    sign_in(page, server, server.new_account("1"))
    [cookie] = [c for c in page.context.cookies() if c["name"] == "capd_console"]
    assert cookie["httpOnly"] is True and cookie["sameSite"] == "Strict"
    assert cookie["path"] == "/console" and cookie["expires"] > 0
    assert page.evaluate("document.cookie") == ""  # nothing readable by script


def test_session_cookie_is_secure_over_tls(server: LiveServer) -> None:
    key = server.new_account("1")

    async def sign_in_over_https() -> tuple[str, list[str]]:
        transport = httpx.ASGITransport(app=server.app, client=("127.0.0.1", 4000))
        async with httpx.AsyncClient(transport=transport,
                                     base_url="https://console.test") as client:
            form = await client.get("/console/")
            token = client.cookies.get("capd_signin")
            answer = await client.post("/console/signin", data={"csrf": token, "key": key})
            assert answer.status_code == 303
            return form.headers["set-cookie"], answer.headers.get_list("set-cookie")

    with ThreadPoolExecutor(1) as pool:  # playwright holds this thread's event loop
        signin_cookie, cookies = pool.submit(asyncio.run, sign_in_over_https()).result()
    assert "Secure" in signin_cookie
    session = [c for c in cookies if c.startswith("capd_console=")][0]
    assert "Secure" in session and "HttpOnly" in session and "SameSite=strict" in session


def test_csp_header_on_every_console_page(new_page: Any, server: LiveServer) -> None:
    page = new_page()
    for path in ("/", "/console/", "/console/admin", "/console/static/console.css"):
        response = page.goto(f"{server.url}{path}")
        csp = response.headers["content-security-policy"]
        assert "script-src 'self'" in csp and "style-src 'self'" in csp
        assert "unsafe-inline" not in csp and "frame-ancestors 'none'" in csp
        assert response.headers["x-content-type-options"] == "nosniff"
    sign_in(page, server, server.new_account("1"))
    html = page.content()
    assert " style=" not in html and "<script" not in html


def test_forms_without_a_csrf_token_are_refused(new_page: Any, server: LiveServer) -> None:
    key = server.new_account("1")
    page = new_page()
    sign_in(page, server, key)
    with raw_client(server, page) as client:
        answer = client.post("/console/access/whitelist",
                             data={"action": "add", "network": "10.0.0.0/8"})
        assert answer.status_code == 403
        answer = client.post("/console/access/whitelist",
                             data={"action": "add", "network": "10.0.0.0/8", "csrf": "x" * 43})
        assert answer.status_code == 403
        assert server.admin(lambda store: store.whitelist(account_id(server, key))) == []
        good = client.post("/console/access/whitelist",
                           data={"action": "add", "network": "10.0.0.0/8",
                                 "csrf": csrf_of(page)})
        assert good.status_code == 303


def test_operator_forms_without_a_csrf_token_are_refused(new_page: Any,
                                                         server: LiveServer) -> None:
    key = server.new_account("1")
    page = new_page()
    sign_in_admin(page, server, admin_token(server))
    url = f"/console/admin/accounts/{account_id(server, key)}/adjust"
    with raw_client(server, page) as client:
        for data in ({"amount": "100", "note": "x"},
                     {"amount": "100", "note": "x", "csrf": "wrong"}):
            assert client.post(url, data=data).status_code == 403
    assert server.call("getBalance", {"clientKey": key})["balance"] == 1.0


def test_sign_in_without_the_form_token_is_refused(server: LiveServer) -> None:
    key = server.new_account("1")
    answer = server.client.post("/console/signin", data={"key": key})
    assert answer.status_code == 403 and "capd_console" not in answer.headers.get(
        "set-cookie", "")


def test_hostile_name_and_note_are_escaped(new_page: Any, server: LiveServer) -> None:
    key = server.new_account("1", name=HOSTILE)
    server.admin(lambda store: store.adjust_balance(account_id(server, key), 100, "topup",
                                                    "test", HOSTILE, server.clock()))
    page = new_page()
    sign_in(page, server, key)
    assert page.inner_text("h1").startswith(HOSTILE)
    assert HOSTILE in page.inner_text("table")
    assert page.evaluate("window.pwned") is None
    operator = new_page()
    sign_in_admin(operator, server, admin_token(server))
    operator.goto(f"{server.url}/console/admin/accounts/{account_id(server, key)}")
    assert operator.inner_text("h1").startswith(HOSTILE)
    assert operator.evaluate("window.pwned") is None


def test_an_account_session_cannot_touch_another_account(new_page: Any,
                                                         server: LiveServer) -> None:
    mine, theirs = server.new_account("1"), server.new_account("1", name="Other")
    victim = new_page()
    sign_in(victim, server, theirs)
    victim.goto(f"{server.url}/console/access")
    their_key_id = victim.get_attribute("input[name=key_id]", "value")
    page = new_page()
    sign_in(page, server, mine)
    page.goto(f"{server.url}/console/access")
    with raw_client(server, page) as client:
        answer = client.post("/console/access/rotate",
                             data={"csrf": csrf_of(page), "key_id": their_key_id})
        assert answer.status_code == 404
        assert client.get(f"/console/admin/accounts/{account_id(server, theirs)}"
                          ).status_code == 403
    assert server.call("getBalance", {"clientKey": theirs})["errorId"] == 0
    page.goto(f"{server.url}/console/")
    assert "Other" not in page.content()


@pytest.mark.parametrize("path", ["/console/admin", "/console/admin/accounts",
                                  "/console/admin/accounts/1", "/console/admin/bans",
                                  "/console/admin/blocklist", "/console/admin/settings"])
def test_an_account_session_is_refused_on_operator_pages(new_page: Any, server: LiveServer,
                                                         path: str) -> None:
    page = new_page()
    sign_in(page, server, server.new_account("1"))
    response = page.goto(f"{server.url}{path}")
    assert response.status == 403
    assert "admin token" in page.inner_text("[role=alert]")


def test_an_account_session_cannot_post_operator_forms(new_page: Any,
                                                       server: LiveServer) -> None:
    key = server.new_account("1")
    page = new_page()
    sign_in(page, server, key)
    with raw_client(server, page) as client:
        answer = client.post(f"/console/admin/accounts/{account_id(server, key)}/adjust",
                             data={"csrf": csrf_of(page), "amount": "100", "note": "free"})
        assert answer.status_code == 403
    assert server.call("getBalance", {"clientKey": key})["balance"] == 1.0


def test_failed_sign_ins_ban_the_address(new_page: Any, make_server: Any) -> None:
    server = make_server(unknown_key_ban_threshold=3)
    key = server.new_account("1")
    page = new_page()
    for _ in range(3):
        sign_in(page, server, "e" * 32)
        assert "No account holds that key" in page.inner_text("[role=alert]")
    sign_in(page, server, key)
    assert "banned" in page.inner_text("[role=alert]")
    assert server.call("getBalance", {"clientKey": key})["errorCode"] == "ERROR_IP_BANNED"
    [ban] = server.admin(lambda store: store.bans(server.clock()))
    assert ban.scope == "ip" and ban.ip == "127.0.0.1"


def test_failed_operator_sign_ins_ban_the_address(new_page: Any, make_server: Any) -> None:
    server = make_server(unknown_key_ban_threshold=3)
    token = admin_token(server)
    page = new_page()
    for _ in range(3):
        sign_in_admin(page, server, "ab" * 32)
    sign_in_admin(page, server, token)
    assert "banned" in page.inner_text("[role=alert]")
    assert server.call("getBalance", {"clientKey": "1" * 32})["errorCode"] == "ERROR_IP_BANNED"


def test_revoking_the_key_ends_the_session(new_page: Any, server: LiveServer) -> None:
    key = server.new_account("1")
    page = new_page()
    sign_in(page, server, key)
    server.admin(lambda store: store.revoke_key(key, server.clock()))
    page.goto(f"{server.url}/console/access")
    assert page.url == f"{server.url}/console/" and page.query_selector("#key")


def test_revoking_the_admin_token_ends_the_session(new_page: Any, server: LiveServer) -> None:
    import hashlib

    token = admin_token(server)
    page = new_page()
    sign_in_admin(page, server, token)
    server.admin(lambda store: store.revoke_admin_token(
        hashlib.sha256(token.encode()).hexdigest(), server.clock()))
    page.goto(f"{server.url}/console/admin/accounts")
    assert page.url == f"{server.url}/console/admin" and page.query_selector("#token")


def test_sessions_expire(new_page: Any, server: LiveServer) -> None:
    page = new_page()
    sign_in(page, server, server.new_account("1"))
    server.clock.advance(CONSOLE_SESSION_S + 1)
    page.goto(f"{server.url}/console/access")
    assert page.query_selector("#key") is not None


def test_an_operator_session_is_not_an_account_session(new_page: Any,
                                                       server: LiveServer) -> None:
    page = new_page()
    sign_in_admin(page, server, admin_token(server))
    response = page.goto(f"{server.url}/console/access")
    assert response.status == 403


def test_a_session_keeps_the_key_digest_never_the_key(new_page: Any, server: LiveServer,
                                                      tmp_path: Any) -> None:
    import sqlite3

    from capd.console.sessions import digest

    key = server.new_account("1")
    page = new_page()
    sign_in(page, server, key)
    token = cookies_for(page)["capd_console"]
    session = server.admin(lambda store: store.console_session(digest(token), server.clock()))
    assert session is not None and session.key_digest == digest(key)
    conn = sqlite3.connect(tmp_path / "capd.db")
    try:
        dump = "\n".join(conn.iterdump())
    finally:
        conn.close()
    assert digest(key) in dump and key not in dump


def test_the_keys_page_shows_a_hint_of_each_key(new_page: Any, server: LiveServer) -> None:
    key = server.new_account("1")
    page = new_page()
    sign_in(page, server, key)
    page.click("text=Keys & access")
    assert f"{key[:4]}…" in page.inner_text("table")
    assert key[4:] not in page.content()
