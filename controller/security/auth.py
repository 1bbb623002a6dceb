"""Secrets of the API and the panel: password hashes, API tokens and session ids.

Passwords are hashed with argon2id (argon2-cffi, its default parameters); hashing costs tens of
milliseconds of CPU, so the API calls `hash_password` / `verify_password` on a worker thread.
Tokens and session ids are 256 random bits: a plain SHA-256 of one is as good as a slow hash (there
is nothing to guess), so the database keeps only that digest and a lookup is one indexed read.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

TOKEN_PREFIX = "fct_"  # lets a secret scanner (and a person) recognise a floorctl token
MIN_PASSWORD = 10

_hasher = PasswordHasher()
# Verified against when the account does not exist, so a wrong name costs the same as a wrong password.
_DECOY = _hasher.hash(secrets.token_urlsafe(16))


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> bool:
    """True when `password` matches `stored`; None (no such account) costs a verification too."""
    try:
        return _hasher.verify(stored or _DECOY, password) and stored is not None
    except (VerificationError, InvalidHashError):
        return False


def password_problem(password: str) -> str | None:
    """Why a new password is refused, or None."""
    if len(password) < MIN_PASSWORD:
        return f"a password needs at least {MIN_PASSWORD} characters"
    if len(password) > 1024:
        return "a password has at most 1024 characters"
    return None


def new_password() -> str:
    return secrets.token_urlsafe(15)  # 20 characters, 120 bits


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def new_session_id() -> str:
    return secrets.token_urlsafe(32)


def new_csrf() -> str:
    return secrets.token_urlsafe(24)


def digest(secret: str) -> str:
    """What the database keeps of a token or a session id."""
    return hashlib.sha256(secret.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())
