"""Users and API tokens: made, changed, checked and revoked here, for the API, the CLI and the demo.

Password hashing runs on a worker thread (argon2 is tens of milliseconds of CPU by design): the
event loop that drives the devices never waits for it.
"""

from __future__ import annotations

import asyncio
import re
import secrets
import time
from collections.abc import Callable, Iterable

from controller.domain.access import (
    NAME_PATTERN,
    AccessError,
    ApiToken,
    Role,
    User,
    parse_scopes,
)
from controller.security.auth import digest, hash_password, password_problem, verify_password
from controller.security.auth import new_token as _new_secret
from controller.store.accounts import AccountRepository

_NAME = re.compile(NAME_PATTERN)


class Accounts:
    def __init__(self, repo: AccountRepository, clock: Callable[[], float] = time.time) -> None:
        self.repo = repo
        self.clock = clock

    # ---- users -----------------------------------------------------------------------------------
    async def add_user(self, name: str, role: Role | str, password: str) -> User:
        """A new user; AccessError for a taken or malformed name, an unknown role, a weak password."""
        role = _person_role(role)
        if not _NAME.match(name):
            raise AccessError(f"a user name is 1-64 letters, digits and _ . @ - (got {name!r})")
        if (problem := password_problem(password)) is not None:
            raise AccessError(problem)
        if await self.repo.user(name) is not None:
            raise AccessError(f"user {name} exists")
        now = self.clock()
        user = User(name, role, await asyncio.to_thread(hash_password, password), now, now)
        self.repo.save_user(user)
        await self.repo.flush()
        return user

    async def change_user(self, name: str, *, role: Role | str | None = None, password: str | None = None,
                          disabled: bool | None = None) -> User:
        user = await self.repo.user(name)
        if user is None:
            raise LookupError(f"no user {name}")
        password_hash = user.password_hash
        if password is not None:
            if (problem := password_problem(password)) is not None:
                raise AccessError(problem)
            password_hash = await asyncio.to_thread(hash_password, password)
        changed = User(name, _person_role(role) if role is not None else user.role, password_hash,
                       user.created_at, self.clock(), user.disabled if disabled is None else disabled)
        self.repo.save_user(changed)
        await self.repo.flush()
        return changed

    async def set_up_user(self, name: str, role: Role | str, password: str) -> User:
        """The user with this role and password, made or changed (the demo's admin, at each start)."""
        if await self.repo.user(name) is None:
            return await self.add_user(name, role, password)
        return await self.change_user(name, role=role, password=password, disabled=False)

    async def users(self) -> list[User]:
        return await self.repo.users()

    async def check_password(self, name: str, password: str) -> User | None:
        """The user when the name and password match an enabled account, else None. An unknown name
        costs one verification too, so timing does not tell which names exist."""
        user = await self.repo.user(name) if _NAME.match(name) else None
        stored = user.password_hash if user is not None and not user.disabled else None
        ok = await asyncio.to_thread(verify_password, stored, password[:1024])
        return user if ok else None

    # ---- tokens ----------------------------------------------------------------------------------
    async def create_token(self, label: str, *, role: Role | str = Role.INTEGRATION,
                           scopes: Iterable[str] = (), expires_in_s: float | None,
                           by: str) -> tuple[ApiToken, str]:
        """A token and its secret. The secret is answered once; only its digest is kept."""
        try:
            role = Role(role)
        except ValueError:
            raise AccessError(f"unknown role {role!r}") from None
        parsed = parse_scopes(role, scopes)
        if expires_in_s is not None and expires_in_s <= 0:
            raise AccessError("a token's lifetime must be positive")
        if not 1 <= len(label) <= 128:
            raise AccessError("a token's label is 1-128 characters")
        secret = _new_secret()
        now = self.clock()
        token = ApiToken(f"t{secrets.token_hex(6)}", digest(secret), label, role, parsed, now, by,
                         now + expires_in_s if expires_in_s is not None else None)
        self.repo.save_token(token)
        await self.repo.flush()
        return token, secret

    async def revoke_token(self, token_id: str) -> ApiToken:
        token = await self.repo.token(token_id)
        if token is None:
            raise LookupError(f"no token {token_id}")
        if token.revoked_at is None:
            token = ApiToken(token.id, token.digest, token.label, token.role, token.scopes, token.created_at,
                             token.created_by, token.expires_at, self.clock())
            self.repo.save_token(token)
            await self.repo.flush()
        return token

    async def tokens(self) -> list[ApiToken]:
        return await self.repo.tokens()

    async def token_for(self, secret: str) -> ApiToken | None:
        """The usable token this secret belongs to, or None (unknown, expired or revoked)."""
        token = await self.repo.token_by_digest(digest(secret))
        return token if token is not None and token.usable(self.clock()) else None


def _person_role(role: Role | str) -> Role:
    try:
        parsed = Role(role)
    except ValueError:
        parsed = None
    if parsed is None or parsed is Role.INTEGRATION:
        raise AccessError(f"a user's role is viewer, operator, supervisor or admin (got {role!r})")
    return parsed
