"""Who may do what: roles, integration scopes, the permissions they grant, and the login back-off.

Pure rules, no I/O: the API asks `grants(...)` which permissions a principal holds and the
`LoginThrottle` whether an attempt may be tried now. The table in docs/security.md says the same in
words, route by route, and a test holds the two together.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum


class Role(StrEnum):
    VIEWER = "viewer"
    OPERATOR = "operator"
    SUPERVISOR = "supervisor"
    ADMIN = "admin"
    INTEGRATION = "integration"  # a WMS's token: what it may do is its scopes


PEOPLE = (Role.VIEWER, Role.OPERATOR, Role.SUPERVISOR, Role.ADMIN)


class Permission(StrEnum):
    READ = "read"  # every listing, the panel's feed, the API docs
    ORDERS_CREATE = "orders:create"  # the WMS's (an integration token), and an admin's
    ORDERS_CANCEL = "orders:cancel"
    ORDERS_RESOLVE = "orders:resolve"
    ALARMS_ACK = "alarms:ack"
    DEVICES_CONTROL = "devices:control"
    STOCK_ADJUST = "stock:adjust"
    AUDIT_READ = "audit:read"
    USERS = "users"  # list, add, change and disable users
    TOKENS = "tokens"  # list, create and revoke API tokens
    SETTINGS = "settings"


class Scope(StrEnum):
    """What an integration token is for."""

    READ = "read"
    ORDERS_WRITE = "orders:write"  # release orders and cancel them


_VIEWER = frozenset({Permission.READ})
_OPERATOR = _VIEWER | {Permission.ORDERS_CANCEL, Permission.ORDERS_RESOLVE, Permission.ALARMS_ACK}
_SUPERVISOR = _OPERATOR | {Permission.DEVICES_CONTROL, Permission.STOCK_ADJUST}
_ADMIN = frozenset(Permission)

ROLE_GRANTS: dict[Role, frozenset[Permission]] = {
    Role.VIEWER: _VIEWER,
    Role.OPERATOR: _OPERATOR,
    Role.SUPERVISOR: _SUPERVISOR,
    Role.ADMIN: _ADMIN,
    Role.INTEGRATION: frozenset(),
}

SCOPE_GRANTS: dict[Scope, frozenset[Permission]] = {
    Scope.READ: frozenset({Permission.READ}),
    Scope.ORDERS_WRITE: frozenset({Permission.ORDERS_CREATE, Permission.ORDERS_CANCEL}),
}


def grants(role: Role, scopes: Iterable[Scope] = ()) -> frozenset[Permission]:
    """The permissions of a role; an integration token's come from its scopes alone."""
    if role is Role.INTEGRATION:
        return frozenset().union(*(SCOPE_GRANTS[s] for s in scopes))
    return ROLE_GRANTS[role]


@dataclass(frozen=True, slots=True)
class Principal:
    """Whoever a request comes from, after authentication."""

    name: str  # the user's name, or `token:<id>` for a token
    role: Role
    permissions: frozenset[Permission]
    via: str  # session | token | open (no authentication configured)

    def may(self, permission: Permission) -> bool:
        return permission in self.permissions


class AccessError(Exception):
    """A user or token that cannot be made as asked (a bad name, role or scope)."""


NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"


def parse_scopes(role: Role, scopes: Iterable[str]) -> tuple[Scope, ...]:
    """The scopes of a token: only an integration token has them, and it needs at least one."""
    wanted = list(dict.fromkeys(scopes))
    if role is not Role.INTEGRATION:
        if wanted:
            raise AccessError(f"a {role.value} token has its role's permissions; scopes are for integration")
        return ()
    unknown = [s for s in wanted if s not in {x.value for x in Scope}]
    if unknown:
        raise AccessError(f"unknown scope {unknown[0]!r} (known: {', '.join(s.value for s in Scope)})")
    if not wanted:
        raise AccessError("an integration token needs at least one scope")
    return tuple(Scope(s) for s in wanted)


@dataclass(slots=True)
class _Failures:
    count: int = 0
    blocked_until: float = 0.0


@dataclass
class LoginThrottle:
    """Back-off on failed logins, per account and per source address.

    The first `free` failures cost nothing; each one after that doubles the wait before the next
    attempt from that account (or address) is even looked at, up to `max_wait_s`. A success clears
    the account and the address. Entries older than `forget_after_s` are dropped.
    """

    free: int = 3
    base_s: float = 1.0
    max_wait_s: float = 300.0
    forget_after_s: float = 3600.0
    max_entries: int = 100_000
    _failures: dict[str, _Failures] = field(default_factory=dict)
    _last_seen: dict[str, float] = field(default_factory=dict)

    @staticmethod
    def keys(account: str, address: str) -> tuple[str, str]:
        return f"account:{account.lower()}", f"address:{address}"

    def wait(self, account: str, address: str, now: float) -> float:
        """Seconds before an attempt for this account from this address may be tried; 0 now."""
        self._forget(now)
        waits = [self._failures[k].blocked_until - now for k in self.keys(account, address)
                 if k in self._failures]
        return max([0.0, *waits])

    def failed(self, account: str, address: str, now: float) -> None:
        for key in self.keys(account, address):
            entry = self._failures.setdefault(key, _Failures())
            entry.count += 1
            over = entry.count - self.free
            if over > 0:
                entry.blocked_until = now + min(self.max_wait_s, self.base_s * 2.0 ** (over - 1))
            self._last_seen[key] = now

    def succeeded(self, account: str, address: str) -> None:
        for key in self.keys(account, address):
            self._failures.pop(key, None)
            self._last_seen.pop(key, None)

    def _forget(self, now: float) -> None:
        stale = [k for k, at in self._last_seen.items() if now - at > self.forget_after_s]
        if len(self._last_seen) - len(stale) > self.max_entries:  # a spray of addresses: the oldest go
            stale = sorted(self._last_seen, key=self._last_seen.__getitem__)[:len(self._last_seen) // 2]
        for key in stale:
            self._failures.pop(key, None)
            self._last_seen.pop(key, None)


# ---- accounts, as the store keeps them ---------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class User:
    name: str
    role: Role
    password_hash: str
    created_at: float
    changed_at: float
    disabled: bool = False


@dataclass(frozen=True, slots=True)
class ApiToken:
    id: str
    digest: str  # SHA-256 of the secret; the secret itself is shown once and never kept
    label: str
    role: Role
    scopes: tuple[Scope, ...]
    created_at: float
    created_by: str
    expires_at: float | None = None
    revoked_at: float | None = None

    def usable(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)

    def status(self, now: float) -> str:
        if self.revoked_at is not None:
            return "revoked"
        return "expired" if not self.usable(now) else "active"


@dataclass(slots=True)
class LoginSession:
    digest: str  # SHA-256 of the cookie's session id
    user: str
    role: Role
    csrf: str
    created_at: float
    last_seen: float
    ended_at: float | None = None

    def live(self, now: float, idle_s: float, max_s: float) -> bool:
        return self.ended_at is None and now - self.last_seen < idle_s and now - self.created_at < max_s


@dataclass(frozen=True, slots=True)
class AuditEntry:
    """One state-changing request: who (actor, role, address), what (action, target), what came of it."""

    at: float
    actor: str
    role: str | None
    address: str | None
    action: str
    target: str | None
    outcome: str
    detail: str | None = None
