"""The web console over plain HTTP on both backends (the browser tests in tests/console
run on SQLite): sign-in, sessions ended by revocation, the landing page, and
``capd admin-token`` as a real subprocess."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from tests.helpers import LiveServer

ROOT = Path(__file__).resolve().parents[2]


def form_token(client: httpx.Client, path: str) -> str:
    page = client.get(path)
    assert page.status_code == 200
    match = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert match
    return match.group(1)


def console_client(server: LiveServer) -> httpx.Client:
    return httpx.Client(base_url=server.url, timeout=10, follow_redirects=False)


def test_landing_page_links_the_consoles(server: LiveServer) -> None:
    page = server.client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert 'href="/console/"' in page.text and 'href="/console/admin"' in page.text
    assert server.client.post("/", json={}).json()["errorCode"] == "ERROR_NO_SUCH_METHOD"


def test_account_sign_in_and_revocation(server: LiveServer) -> None:
    key = server.new_account("3")
    with console_client(server) as client:
        answer = client.post("/console/signin", data={"csrf": form_token(client, "/console/"),
                                                      "key": key})
        assert answer.status_code == 303 and answer.headers["location"] == "/console/"
        overview = client.get("/console/")
        assert overview.status_code == 200 and "3.00 USD" in overview.text
        server.admin(lambda store: store.revoke_key(key, server.clock()))
        assert 'id="key"' in client.get("/console/").text  # signed out


def test_operator_sign_in_with_a_cli_token(server: LiveServer) -> None:
    db = server.settings.database_url
    created = subprocess.run([sys.executable, "-m", "capd", "--db", db, "admin-token",
                              "create", "--name", "ops"], capture_output=True, text=True,
                             cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)},
                             check=True)
    token = created.stdout.strip().splitlines()[-1]
    assert re.fullmatch(r"[0-9a-f]{64}", token)
    with console_client(server) as client:
        answer = client.post("/console/admin/signin",
                             data={"csrf": form_token(client, "/console/admin"),
                                   "token": token})
        assert answer.status_code == 303
        assert "Dashboard" in client.get("/console/admin").text
        revoked = subprocess.run([sys.executable, "-m", "capd", "--db", db, "admin-token",
                                  "revoke", token], capture_output=True, text=True, cwd=ROOT,
                                 env={**os.environ, "PYTHONPATH": str(ROOT)})
        assert revoked.returncode == 0, revoked.stderr
        assert 'id="token"' in client.get("/console/admin").text  # signed out
    again = subprocess.run([sys.executable, "-m", "capd", "--db", db, "admin-token", "revoke",
                            token], capture_output=True, text=True, cwd=ROOT,
                           env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert again.returncode == 1 and "no live admin token" in again.stderr


def test_cookies_are_secure_behind_a_trusted_tls_proxy(make_server: Any) -> None:
    server = make_server(trusted_proxies="127.0.0.1/32")
    key = server.new_account("1")
    https = {"x-forwarded-proto": "https"}
    with console_client(server) as client:
        form = client.get("/console/", headers=https)
        assert "Secure" in form.headers["set-cookie"]
        # the client speaks plain HTTP to the "proxy side": it holds back Secure cookies,
        # so the sign-in token goes back by hand
        token = re.search(r'name="csrf" value="([^"]+)"', form.text)
        assert token
        answer = client.post("/console/signin", data={"csrf": token.group(1), "key": key},
                             headers={**https, "cookie": f"capd_signin={token.group(1)}"})
        session = [c for c in answer.headers.get_list("set-cookie")
                   if c.startswith("capd_console=")][0]
        assert "Secure" in session


def test_forwarded_proto_from_an_untrusted_peer_is_ignored(server: LiveServer) -> None:
    page = server.client.get("/console/", headers={"x-forwarded-proto": "https"})
    assert "Secure" not in page.headers["set-cookie"]
