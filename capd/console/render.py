"""Pages rendered on the server: one Jinja2 environment (autoescaped), its filters, and the
security headers every console response carries."""

from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import jinja2
from starlette.requests import Request
from starlette.responses import HTMLResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from capd.domain.money import from_units

# No inline script or style anywhere (charts are server-drawn SVG styled from the
# stylesheet); forms post only to this origin; no framing.
CONTENT_SECURITY_POLICY = (
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self';"
    " form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
SECURITY_HEADERS = {
    "content-security-policy": CONTENT_SECURITY_POLICY,
    "x-content-type-options": "nosniff",
    "x-frame-options": "DENY",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


def usd(value: int | Decimal | None, places: int = 2) -> str:
    """Storage units (int) or USD (Decimal) as USD text: at least ``places`` decimals, more
    when the amount needs them (0.0003 stays 0.0003)."""
    if value is None:
        return "-"
    amount = from_units(value) if isinstance(value, int) else value
    text = f"{amount.normalize():f}"
    whole, _, frac = text.partition(".")
    return f"{whole}.{frac.ljust(places, '0')}"


def timestamp(ts: float | None) -> str:
    if ts is None:
        return "-"
    return time.strftime("%Y-%m-%d %H:%M", time.gmtime(ts))


def day(ts: float) -> str:
    return time.strftime("%m-%d", time.gmtime(ts))


def span(seconds: float | None) -> str:
    """A duration for people: 42 s, 7 min, 3 h 5 min, 2 d 4 h."""
    if seconds is None:
        return "-"
    s = max(0, int(seconds))
    if s < 120:
        return f"{s} s"
    if s < 7200:
        return f"{s // 60} min"
    if s < 172800:
        return f"{s // 3600} h {s % 3600 // 60} min"
    return f"{s // 86400} d {s % 86400 // 3600} h"


def seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f} s"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"


def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("capd.console", "templates"),
        autoescape=True, undefined=jinja2.StrictUndefined,
        trim_blocks=True, lstrip_blocks=True)
    env.filters.update(usd=usd, ts=timestamp, day=day, span=span, seconds=seconds,
                       percent=percent)
    return env


ENV = _environment()


def page(request: Request, template: str, status: int = 200, **context: Any) -> HTMLResponse:
    """Render a template; ``context`` values are escaped by autoescape."""
    html = ENV.get_template(template).render(path=request.url.path, **context)
    return HTMLResponse(html, status)


class SecurityHeadersMiddleware:
    """Adds SECURITY_HEADERS to every response it wraps (pages, redirects, static files,
    errors), keeping any a response set itself."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                for name, value in SECURITY_HEADERS.items():
                    if name.encode() not in present:
                        headers.append((name.encode(), value.encode()))
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, with_headers)
