"""Authentication, permissions and the audit trail of the HTTP app.

A request is someone: a panel session (an HttpOnly cookie, with a CSRF token for every
state-changing request), or an API client (`Authorization: Bearer <token>`). Each route names the
permission it needs (`guard(...)`, docs/security.md has the table); a state-changing route also
names its action and target, and whatever comes of it (done, refused, denied) is one audit row.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Annotated, Any, Self

from fastapi import Depends, HTTPException, Request, status
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from controller.domain.access import (
    AuditEntry,
    LoginSession,
    LoginThrottle,
    Permission,
    Principal,
    Role,
    grants,
)
from controller.domain.devices import ControlRefused, DeviceNotFound
from controller.domain.model import InvalidTransition, OrderConflict, OrderNotFound
from controller.security.auth import digest, new_csrf, new_session_id, same
from controller.security.auth_users import Accounts
from controller.site import ApiSettings

log = logging.getLogger("floorctl.auth")

SESSION_COOKIE = "floorctl_session"
CSRF_COOKIE = "floorctl_csrf"  # readable by the panel's scripts, which echo it in the header
CSRF_HEADER = "X-CSRF-Token"
# Sent by the panel's own timers (refreshes, polls): they do not count as the user being active.
BACKGROUND_HEADER = "X-Floorctl-Background"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
TOKEN_CACHE_S = 5.0  # a token revoked from the command line stops working within this
SESSION_SAVE_EVERY_S = 60.0  # how often a session's last activity is written (it lives in memory)

# Declared for the OpenAPI document (Swagger's "Authorize"); the checks are the Gate's own.
bearer_scheme = HTTPBearer(auto_error=False, description="an API token: `floorctl tokens create`")
cookie_scheme = APIKeyCookie(
    name=SESSION_COOKIE, auto_error=False,
    description=f"the panel's login; state-changing requests also send {CSRF_HEADER}")

NO_AUTH = Principal("no-auth", Role.ADMIN, grants(Role.ADMIN), via="open")


def address_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


@dataclass
class Gate:
    """Who a request comes from and what they may do; the sessions; the login back-off.

    `accounts` None with `enabled` True refuses every credential (an app built with nothing to check
    against is closed, not open). `enabled` False (`--no-auth`) lets every request in as NO_AUTH.
    """

    accounts: Accounts | None
    settings: ApiSettings = field(default_factory=ApiSettings)
    enabled: bool = True
    clock: Callable[[], float] = time.time
    sessions: dict[str, LoginSession] = field(default_factory=dict)
    throttle: LoginThrottle = field(default_factory=LoginThrottle)
    _tokens: dict[str, tuple[Any, float]] = field(default_factory=dict)
    _saved: dict[str, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.throttle.free = self.settings.login_free_failures
        self.throttle.max_wait_s = self.settings.login_max_wait_s

    @classmethod
    def without_auth(cls, accounts: Accounts | None = None, settings: ApiSettings | None = None) -> Gate:
        return cls(accounts, settings or ApiSettings(), enabled=False)

    async def start(self) -> None:
        """Sessions of the last run that are still fresh stay logged in after a restart."""
        if self.accounts is None:
            return
        now = self.clock()
        for session in await self.accounts.repo.live_sessions(now - self.settings.session_idle_s):
            if self._live(session, now):
                self.sessions[session.digest] = session

    # ---- who is asking -------------------------------------------------------------------------
    async def principal(self, request: Request) -> Principal | None:
        """The request's principal; None without credentials; 401 for credentials that are no good;
        403 for a session's state-changing request without its CSRF token."""
        if not self.enabled:
            return NO_AUTH
        header = request.headers.get("authorization")
        if header is not None:
            scheme, _, secret = header.partition(" ")
            if scheme.lower() != "bearer" or not secret.strip():
                raise _unauthorised("use Authorization: Bearer <token>")
            return await self._token_principal(secret.strip())
        cookie = request.cookies.get(SESSION_COOKIE)
        if cookie is None:
            return None
        session = self.session_of(cookie)
        if session is None:
            raise _unauthorised("the session has ended: log in again")
        if request.method not in SAFE_METHODS:
            sent = request.headers.get(CSRF_HEADER, "")
            if not sent or not same(sent, session.csrf):
                raise HTTPException(status.HTTP_403_FORBIDDEN, f"missing or wrong {CSRF_HEADER}")
        if request.headers.get(BACKGROUND_HEADER) is None and not request.url.path.startswith("/api/events/"):
            self._touch(session)
        return Principal(session.user, session.role, grants(session.role), via="session")

    async def _token_principal(self, secret: str) -> Principal:
        key = digest(secret)
        now = self.clock()
        cached = self._tokens.get(key)
        if cached is None or now - cached[1] > TOKEN_CACHE_S:
            token = await self.accounts.repo.token_by_digest(key) if self.accounts is not None else None
            if token is None:
                self._tokens.pop(key, None)
                raise _unauthorised("unknown token")
            if len(self._tokens) > 10_000:
                self._tokens.clear()
            cached = self._tokens[key] = (token, now)
        token = cached[0]
        if not token.usable(now):
            raise _unauthorised(f"the token is {token.status(now)}")
        return Principal(f"token:{token.id}", token.role, grants(token.role, token.scopes), via="token")

    def forget_token(self, token_digest: str) -> None:
        self._tokens.pop(token_digest, None)

    # ---- sessions ------------------------------------------------------------------------------
    def open_session(self, user: str, role: Role) -> tuple[str, LoginSession]:
        secret = new_session_id()
        now = self.clock()
        session = LoginSession(digest(secret), user, role, new_csrf(), now, now)
        self.sessions[session.digest] = session
        self._save(session)
        return secret, session

    def session_of(self, secret: str) -> LoginSession | None:
        session = self.sessions.get(digest(secret))
        if session is None:
            return None
        if not self._live(session, self.clock()):
            self.end_session(session)
            return None
        return session

    def end_session(self, session: LoginSession) -> None:
        session.ended_at = self.clock()
        self.sessions.pop(session.digest, None)
        self._save(session)
        self._saved.pop(session.digest, None)

    def end_sessions_of(self, user: str) -> None:
        for session in [s for s in self.sessions.values() if s.user == user]:
            self.end_session(session)

    def _live(self, session: LoginSession, now: float) -> bool:
        return session.live(now, self.settings.session_idle_s, self.settings.session_max_s)

    def _touch(self, session: LoginSession) -> None:
        session.last_seen = self.clock()
        if session.last_seen - self._saved.get(session.digest, 0.0) >= SESSION_SAVE_EVERY_S:
            self._save(session)

    def _save(self, session: LoginSession) -> None:
        if self.accounts is not None:
            self.accounts.repo.save_session(session)
            self._saved[session.digest] = self.clock()
        if len(self.sessions) > 1000:  # drop the ones that lapsed without a logout
            now = self.clock()
            for lapsed in [s for s in self.sessions.values() if not self._live(s, now)]:
                self.end_session(lapsed)

    # ---- the audit trail -----------------------------------------------------------------------
    def record(self, request: Request, action: str, target: str | None, outcome: str,
               detail: str | None = None, *, actor: Principal | str | None = None) -> None:
        who = actor if actor is not None else getattr(request.state, "principal", None)
        name, role = (who.name, who.role.value) if isinstance(who, Principal) else (who or "anonymous", None)
        entry = AuditEntry(self.clock(), name, role, address_of(request), action, target, outcome[:500],
                           detail)
        if outcome != "ok":
            log.warning("%s %s by %s (%s) from %s: %s", action, target or "-", name, role or "-",
                        entry.address, outcome)
        if self.accounts is not None:
            self.accounts.repo.record(entry)


def _unauthorised(detail: str) -> HTTPException:
    return HTTPException(status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": "Bearer"})


def get_gate(request: Request) -> Gate:
    gate: Gate = request.app.state.gate
    return gate


GateDep = Annotated[Gate, Depends(get_gate)]


class Act:
    """A state-changing request under way: `async with act:` records its outcome in the audit trail
    (ok, or what refused it) when the block ends. `record(...)` writes a row of its own instead."""

    def __init__(self, request: Request, gate: Gate, action: str, target: str | None) -> None:
        self.request = request
        self.gate = gate
        self.action = action
        self.target = target
        self.principal: Principal = request.state.principal

    def record(self, outcome: str, *, target: str | None = None, detail: str | None = None) -> None:
        self.gate.record(self.request, self.action, target or self.target, outcome, detail)

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, kind: type[BaseException] | None, exc: BaseException | None,
                        _tb: TracebackType | None) -> None:
        self.record(outcome_of(exc))


def outcome_of(exc: BaseException | None) -> str:
    """The audit trail's word for how a request ended."""
    if exc is None:
        return "ok"
    if isinstance(exc, HTTPException):
        word = {404: "not found", 409: "refused", 403: "denied"}.get(exc.status_code,
                                                                     f"failed {exc.status_code}")
        return f"{word}: {exc.detail}" if isinstance(exc.detail, str) else word
    if isinstance(exc, OrderNotFound | DeviceNotFound | LookupError):
        return f"not found: {exc}"
    if isinstance(exc, InvalidTransition | ControlRefused | OrderConflict | ValueError):
        return f"refused: {exc}"
    return f"failed: {type(exc).__name__}"


def guard(permission: Permission | None, *, action: str | None = None, target: str | None = None,
          open_path: str | None = None) -> Callable[..., Awaitable[Any]]:
    """The dependency that lets a request through with `permission` (None: anyone logged in).

    `action` and `target` (a template over the path parameters, e.g. "order:{order_id}") make the
    route state-changing: a refusal here is audited, and the route gets an `Act` to record the rest.
    `open_path`: the route answers without credentials when the site file opens that path.
    """

    async def check(request: Request, gate: GateDep,
                    _bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer_scheme)] = None,
                    _cookie: Annotated[str | None, Depends(cookie_scheme)] = None) -> Any:
        where = target.format(**request.path_params) if target else None
        if open_path is not None and open_path in gate.settings.open_paths:
            request.state.principal = None
            return None
        try:
            principal = await gate.principal(request)
        except HTTPException as exc:
            if action is not None:
                gate.record(request, action, where, outcome_of(exc))
            raise
        if principal is None:
            if action is not None:
                gate.record(request, action, where, "denied: no credentials")
            raise _unauthorised("log in, or send Authorization: Bearer <token>")
        request.state.principal = principal
        if permission is not None and not principal.may(permission):
            if action is not None:
                gate.record(request, action, where, f"denied: needs {permission.value}")
            raise HTTPException(status.HTTP_403_FORBIDDEN,
                                f"{principal.name} ({principal.role.value}) may not do this: "
                                f"it needs {permission.value}")
        return Act(request, gate, action, where) if action is not None else principal

    return check


def can(permission: Permission | None, *, open_path: str | None = None) -> Any:
    """A route dependency for reads: `dependencies=[can(Permission.READ)]`."""
    return Depends(guard(permission, open_path=open_path))


def acting(permission: Permission | None, action: str, target: str | None = None) -> Any:
    """The `Act` of a state-changing route: `act: Annotated[Act, acting(...)]`."""
    return Depends(guard(permission, action=action, target=target))
