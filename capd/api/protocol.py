"""A header-read timeout for uvicorn's HTTP protocols (issue 13).

uvicorn closes a connection that sits idle between requests (``timeout_keep_alive``),
but a client that trickles a request's headers, a byte now and then, holds the
connection for as long as it likes: neither the h11 nor the httptools protocol bounds
the time to read headers. ``guarded(protocol)`` is the protocol class with that bound:
from the moment a connection opens, or the first byte of a further request arrives, the
headers must be complete within ``timeout_s``, else the connection is closed. Bodies
are bounded by ``BodyLimitMiddleware``'s read timeout.
"""

from __future__ import annotations

import asyncio
from typing import Any

from capd.constants import HEADER_READ_TIMEOUT_S


def _load(name: str) -> type[asyncio.Protocol]:
    if name == "h11":
        from uvicorn.protocols.http.h11_impl import H11Protocol

        return H11Protocol
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    return HttpToolsProtocol


def guarded(name: str, timeout_s: float = HEADER_READ_TIMEOUT_S) -> type[asyncio.Protocol]:
    """uvicorn's ``name`` protocol ("h11" or "httptools") with a header-read timeout; pass
    the class as ``uvicorn.Config(http=...)``."""
    base: Any = _load(name)

    class HeaderTimeoutProtocol(base):
        _header_timer: asyncio.TimerHandle | None = None

        def _awaiting_headers(self) -> bool:
            cycle = getattr(self, "cycle", None)
            return cycle is None or bool(cycle.response_complete)

        def _arm(self) -> None:
            if self._header_timer is None:
                self._header_timer = self.loop.call_later(timeout_s, self._header_timeout)

        def _disarm(self) -> None:
            if self._header_timer is not None:
                self._header_timer.cancel()
                self._header_timer = None

        def _header_timeout(self) -> None:
            self._header_timer = None
            if self._awaiting_headers() and not self.transport.is_closing():
                self.transport.close()

        def connection_made(self, transport: asyncio.Transport) -> None:
            super().connection_made(transport)
            self._arm()

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            # armed from the first byte of headers that this data left incomplete (the
            # same instant): a request arriving whole, as nearly all do, costs no timer
            if self._awaiting_headers():
                self._arm()
            else:
                self._disarm()

        def on_response_complete(self) -> None:
            self._disarm()  # the next request's first byte arms it again
            super().on_response_complete()

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    HeaderTimeoutProtocol.__name__ = f"HeaderTimeout{base.__name__}"
    return HeaderTimeoutProtocol
