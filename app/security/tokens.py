"""Bearer token secrets: generated with 256 bits of entropy, stored only as SHA-256."""

from __future__ import annotations

import hashlib
import secrets

TOKEN_PREFIX = "berth_"  # noqa: S105 - a prefix, not a secret


def generate_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    # A fast hash is right here: the secret is random and long, so there is nothing to brute-force.
    return hashlib.sha256(token.encode()).hexdigest()
