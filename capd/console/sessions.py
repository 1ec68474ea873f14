"""Console sessions and CSRF tokens.

Sessions are server-side, in the store: the cookie holds a random token, the store only
its SHA-256 digest, with the session's kind, its CSRF token and its expiry. An account
session names the digest of the API key it was opened with (never the key) and an
operator session the digest of its admin token; both are checked on every request, so
revoking the key or the token (or the session expiring) ends the session at once.

Cookies are HttpOnly, SameSite=Strict, limited to /console, and Secure when the request
came over TLS. Every form that changes something carries the session's CSRF token; the
sign-in forms, which have no session yet, carry a double-submit token that must match a
cookie of the same value.
"""

from __future__ import annotations

import hmac
import ipaddress
import secrets
from dataclasses import dataclass

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from capd.constants import CONSOLE_SESSION_S
from capd.service import ip_allowed
from capd.store.base import ConsoleSession, Store
from capd.store.secrets import secret_digest

SESSION_COOKIE = "capd_console"
SIGNIN_COOKIE = "capd_signin"
COOKIE_PATH = "/console"
ACCOUNT = "account"
ADMIN = "admin"
_MAX_TOKEN_CHARS = 128  # longer cookie or form values are refused before hashing


class Denied(Exception):
    """Raised when a console request may not go on; ``status`` and a line for the user."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def digest(token: str) -> str:
    """What the store keeps of a session token, an admin token or an API key."""
    return secret_digest(token)


def new_token() -> str:
    return secrets.token_urlsafe(32)


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass(frozen=True)
class Opened:
    token: str  # goes into the cookie, never stored
    session: ConsoleSession


async def open_session(store: Store, now: float, kind: str, *, account_id: int | None = None,
                       key_digest: str | None = None,
                       admin_token_hash: str | None = None) -> Opened:
    """Create a session (and forget expired ones); returns the cookie token. An account
    session takes the digest of the key it was opened with (``digest(key)``)."""
    await store.sweep_console_sessions(now)
    token = new_token()
    session = ConsoleSession(digest(token), kind, account_id, key_digest, admin_token_hash,
                             new_token(), now, now + CONSOLE_SESSION_S)
    await store.create_console_session(session)
    return Opened(token, session)


async def current_session(request: Request, store: Store, now: float,
                          ip: str) -> ConsoleSession | None:
    """The request's live session: unexpired, its key or admin token still live, and for
    an account, ``ip`` on the account's whitelist (as for the key's API requests)."""
    token = request.cookies.get(SESSION_COOKIE, "")
    if not token or len(token) > _MAX_TOKEN_CHARS:
        return None
    session = await store.console_session(digest(token), now)
    if session is None:
        return None
    if session.kind == ACCOUNT:
        caller = await store.caller_for_key_digest(session.key_digest or "")
        alive = caller is not None and caller.account_id == session.account_id
        if alive and caller is not None and not ip_allowed(ip, caller.whitelist):
            return None  # kept: it works again from an allowed address
    else:
        alive = await store.admin_token(session.admin_token_hash or "") is not None
    if not alive:
        await store.delete_console_session(session.token_hash)
        return None
    return session


def _secure(request: Request) -> bool:
    """Whether the browser reached us over TLS: directly, or through a trusted proxy
    (``trusted_proxies``) that says so in X-Forwarded-Proto."""
    if request.url.scheme == "https":
        return True
    proto = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    if proto != "https" or request.client is None:
        return False
    try:
        peer = ipaddress.ip_address(request.client.host)
    except ValueError:
        return False
    trusted = request.app.state.service.settings.trusted_proxies
    return any(peer in net for net in trusted if net.version == peer.version)


def set_session_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(SESSION_COOKIE, token, max_age=CONSOLE_SESSION_S, path=COOKIE_PATH,
                        secure=_secure(request), httponly=True, samesite="strict")
    response.delete_cookie(SIGNIN_COOKIE, path=COOKIE_PATH, secure=_secure(request),
                           httponly=True, samesite="strict")


def clear_session_cookie(response: Response, request: Request) -> None:
    response.delete_cookie(SESSION_COOKIE, path=COOKIE_PATH, secure=_secure(request),
                           httponly=True, samesite="strict")


def signin_token(request: Request) -> str:
    """The double-submit token of the sign-in form: the cookie's, or a new one."""
    token = request.cookies.get(SIGNIN_COOKIE, "")
    return token if 20 <= len(token) <= _MAX_TOKEN_CHARS else new_token()


def set_signin_cookie(response: Response, request: Request, token: str) -> None:
    response.set_cookie(SIGNIN_COOKIE, token, max_age=CONSOLE_SESSION_S, path=COOKIE_PATH,
                        secure=_secure(request), httponly=True, samesite="strict")


async def signin_form(request: Request) -> FormData:
    """The posted sign-in form, once its CSRF token matches the sign-in cookie."""
    form = await request.form()
    sent = form.get("csrf")
    cookie = request.cookies.get(SIGNIN_COOKIE, "")
    if not isinstance(sent, str) or not cookie or len(cookie) > _MAX_TOKEN_CHARS or not same(
            sent, cookie):
        raise Denied(403, "The form is out of date (or cookies are off): reload the page and"
                     " try again.")
    return form


async def session_form(request: Request, session: ConsoleSession) -> FormData:
    """The posted form of a signed-in page, once its CSRF token matches the session's."""
    form = await request.form()
    sent = form.get("csrf")
    if not isinstance(sent, str) or not same(sent, session.csrf):
        raise Denied(403, "The form is out of date: reload the page and try again.")
    return form
