"""What every console handler needs: the service and the operator's AdminService of the
running app, the client address, and the wrappers that resolve the session and turn
refusals into pages."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response

from capd.admin import AdminService
from capd.api.middleware import CLIENT_IP
from capd.console.render import page
from capd.console.sessions import ACCOUNT, ADMIN, Denied, current_session
from capd.service import Service
from capd.store.base import ConsoleSession

Handler = Callable[[Request, ConsoleSession], Awaitable[Response]]


def service(request: Request) -> Service:
    svc: Service = request.app.state.service
    return svc


def admin(request: Request) -> AdminService:
    """The AdminService over the app's store and clock (made once per app)."""
    state = request.app.state
    existing: AdminService | None = getattr(state, "console_admin", None)
    if existing is None:
        svc = service(request)
        existing = AdminService(svc.store, svc.clock, svc.settings)
        state.console_admin = existing
    return existing


def client_ip(request: Request) -> str:
    return str(request.scope.get(CLIENT_IP) or (request.client.host if request.client
                                                else "0.0.0.0"))


def redirect(url: str) -> RedirectResponse:
    return RedirectResponse(url, status_code=303)


def message(request: Request, status: int, title: str, text: str,
            back: str = "/console/") -> Response:
    return page(request, "message.html", status, title=title, text=text, back=back)


def _guard(kind: str, signin_url: str) -> Callable[[Handler], Callable[[Request],
                                                                        Awaitable[Response]]]:
    def wrap(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            svc = service(request)
            session = await current_session(request, svc.store, svc.clock(), client_ip(request))
            if session is None:
                if request.method == "GET":
                    return redirect(signin_url)
                return message(request, 403, "Signed out", "Your session has ended: sign in"
                               " again.", signin_url)
            if session.kind != kind:
                text = ("This page is for the operator: sign in with an admin token."
                        if kind == ADMIN else
                        "This page is for account holders: sign in with an API key.")
                return message(request, 403, "Not for this session", text, "/console/")
            try:
                return await handler(request, session)
            except Denied as exc:
                return message(request, exc.status, "Refused", exc.message, signin_url)

        return endpoint

    return wrap


account_page = _guard(ACCOUNT, "/console/")
admin_page = _guard(ADMIN, "/console/admin")


def form_text(form: Any, name: str, limit: int = 200) -> str:
    """A text field of a posted form, stripped; Denied when it is not text or too long."""
    value = form.get(name, "")
    if not isinstance(value, str) or len(value) > limit:
        raise Denied(400, f"The field '{name}' is not usable.")
    return value.strip()

