"""The web console (issue 16): account holders and the operator, in the browser.

Served by ``capd serve`` under /console/ (and a landing page at /); pages are rendered
on the server with Jinja2 and work without JavaScript; charts are server-drawn SVG. See
``sessions`` for how sign-in, sessions and CSRF work and ``render`` for the headers.
"""

from __future__ import annotations

from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import BaseRoute, Mount, Route
from starlette.staticfiles import StaticFiles

from capd.console import account, operator
from capd.console.render import SECURITY_HEADERS, SecurityHeadersMiddleware, page


async def landing(request: Request) -> Response:
    response = page(request, "landing.html")
    response.headers.update(SECURITY_HEADERS)
    return response


async def to_console(request: Request) -> Response:
    return RedirectResponse("/console/", status_code=308)


def routes() -> list[BaseRoute]:
    """``GET /`` (the landing page), ``/console`` and everything under ``/console/``."""
    console = [
        Route("/", account.index, methods=["GET"]),
        Route("/signin", account.signin, methods=["POST"]),
        Route("/signout", account.signout, methods=["POST"]),
        Route("/access", account.access, methods=["GET"]),
        Route("/access/rotate", account.rotate_key, methods=["POST"]),
        Route("/access/whitelist", account.whitelist_change, methods=["POST"]),
        Route("/tasks", account.tasks, methods=["GET"]),
        Route("/admin", operator.index, methods=["GET"]),
        Route("/admin/signin", operator.signin, methods=["POST"]),
        Route("/admin/accounts", operator.accounts, methods=["GET"]),
        Route("/admin/accounts", operator.create_account, methods=["POST"]),
        Route("/admin/accounts/{account_id:int}", operator.account, methods=["GET"]),
        Route("/admin/accounts/{account_id:int}/adjust", operator.adjust, methods=["POST"]),
        Route("/admin/bans", operator.bans, methods=["GET"]),
        Route("/admin/bans/{ban_id:int}/lift", operator.lift_ban, methods=["POST"]),
        Route("/admin/blocklist", operator.blocklist, methods=["GET"]),
        Route("/admin/blocklist", operator.blocklist_change, methods=["POST"]),
        Route("/admin/settings", operator.settings, methods=["GET"]),
        Mount("/static", app=StaticFiles(packages=[("capd.console", "static")]),
              name="static"),
    ]
    return [
        Route("/", landing, methods=["GET"]),
        Route("/console", to_console, methods=["GET"]),
        Mount("/console", routes=console,
              middleware=[Middleware(SecurityHeadersMiddleware)]),
    ]
