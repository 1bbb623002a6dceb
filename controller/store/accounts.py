"""Users, API tokens, panel sessions and the audit trail between the domain and the tables.

Reads go to the database (a login, a token's first use, an admin's listing: rare next to device
traffic); writes go through the batched store writer like every other row, and `flush()` waits for
them where the next request must see them (a new user, a revoked token).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from controller.domain.access import ApiToken, AuditEntry, LoginSession, Role, Scope, User
from controller.store.tables import ApiTokenRow, AuditRow, SessionRow, UserRow
from controller.store.writer import StoreWriter

USERS = UserRow.__table__  # type: ignore[attr-defined]
TOKENS = ApiTokenRow.__table__  # type: ignore[attr-defined]
SESSIONS = SessionRow.__table__  # type: ignore[attr-defined]
AUDIT = AuditRow.__table__  # type: ignore[attr-defined]


class AccountRepository:
    def __init__(self, db: AsyncEngine, writer: StoreWriter) -> None:
        self.db = db
        self.writer = writer

    # ---- users -----------------------------------------------------------------------------------
    async def user(self, name: str) -> User | None:
        async with self.db.connect() as conn:
            row = (await conn.execute(select(USERS).where(USERS.c.name == name))).first()
        return _user(row) if row is not None else None

    async def users(self) -> list[User]:
        async with self.db.connect() as conn:
            rows = (await conn.execute(select(USERS).order_by(USERS.c.name))).all()
        return [_user(r) for r in rows]

    def save_user(self, user: User) -> None:
        self.writer.upsert(USERS, ("name",), {
            "name": user.name, "role": user.role.value, "password_hash": user.password_hash,
            "created_at": user.created_at, "changed_at": user.changed_at, "disabled": user.disabled})

    # ---- tokens ----------------------------------------------------------------------------------
    async def token_by_digest(self, digest: str) -> ApiToken | None:
        async with self.db.connect() as conn:
            row = (await conn.execute(select(TOKENS).where(TOKENS.c.digest == digest))).first()
        return _token(row) if row is not None else None

    async def token(self, token_id: str) -> ApiToken | None:
        async with self.db.connect() as conn:
            row = (await conn.execute(select(TOKENS).where(TOKENS.c.id == token_id))).first()
        return _token(row) if row is not None else None

    async def tokens(self) -> list[ApiToken]:
        async with self.db.connect() as conn:
            rows = (await conn.execute(select(TOKENS).order_by(TOKENS.c.created_at, TOKENS.c.id))).all()
        return [_token(r) for r in rows]

    def save_token(self, token: ApiToken) -> None:
        self.writer.upsert(TOKENS, ("id",), {
            "id": token.id, "digest": token.digest, "label": token.label, "role": token.role.value,
            "scopes": " ".join(s.value for s in token.scopes), "created_at": token.created_at,
            "created_by": token.created_by, "expires_at": token.expires_at, "revoked_at": token.revoked_at})

    # ---- sessions --------------------------------------------------------------------------------
    async def live_sessions(self, seen_since: float) -> list[LoginSession]:
        async with self.db.connect() as conn:
            rows = (await conn.execute(select(SESSIONS).where(SESSIONS.c.ended_at.is_(None),
                                                              SESSIONS.c.last_seen >= seen_since))).all()
        return [LoginSession(r.digest, r.user, Role(r.role), r.csrf, r.created_at, r.last_seen, r.ended_at)
                for r in rows]

    def save_session(self, session: LoginSession) -> None:
        self.writer.upsert(SESSIONS, ("digest",), {
            "digest": session.digest, "user": session.user, "role": session.role.value, "csrf": session.csrf,
            "created_at": session.created_at, "last_seen": session.last_seen, "ended_at": session.ended_at})

    # ---- the audit trail -------------------------------------------------------------------------
    def record(self, entry: AuditEntry) -> None:
        self.writer.append(AUDIT, {"at": entry.at, "actor": entry.actor, "role": entry.role,
                                   "address": entry.address, "action": entry.action, "target": entry.target,
                                   "outcome": entry.outcome, "detail": entry.detail})

    async def flush(self) -> None:
        await self.writer.flush()


def _user(row: Any) -> User:
    return User(row.name, Role(row.role), row.password_hash, row.created_at, row.changed_at,
                bool(row.disabled))


def _token(row: Any) -> ApiToken:
    return ApiToken(row.id, row.digest, row.label, Role(row.role),
                    tuple(Scope(s) for s in row.scopes.split()), row.created_at, row.created_by,
                    row.expires_at, row.revoked_at)
