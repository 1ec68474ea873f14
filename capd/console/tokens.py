"""Admin tokens for the operator's console (``capd admin-token create|revoke``).

A token is 64 hex characters (never confused with a 32-hex API key or a 48-hex worker
token), shown once; the store keeps only its SHA-256 digest, as for worker tokens.
"""

from __future__ import annotations

import secrets
from collections.abc import Callable

from capd.console.sessions import digest
from capd.store.base import Store

ADMIN_TOKEN_BYTES = 32


async def create_admin_token(store: Store, clock: Callable[[], float],
                             name: str) -> tuple[int, str]:
    """A new admin token; returns (its id, the token)."""
    token = secrets.token_hex(ADMIN_TOKEN_BYTES)
    token_id = await store.create_admin_token(digest(token), name, clock())
    return token_id, token


async def revoke_admin_token(store: Store, clock: Callable[[], float], token: str) -> bool:
    """Revoke a live token (its console sessions end with it); False when none matches."""
    return await store.revoke_admin_token(digest(token.strip()), clock())
