"""Users and API tokens, for an admin. Every change is audited; a token's secret is answered once."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, HTTPException, Path, Request, status

from controller.api.auth import Act, Gate, GateDep, acting, can
from controller.api.instants import iso
from controller.api.schemas import TokenCreate, TokenCreated, TokenPublic, UserChange, UserCreate, UserPublic
from controller.domain.access import AccessError, ApiToken, Permission, User
from controller.security.auth_users import Accounts

users = APIRouter(prefix="/api/users", tags=["users"])
tokens = APIRouter(prefix="/api/tokens", tags=["tokens"])

UserPath = Annotated[str, Path(min_length=1, max_length=64, description="the user's name")]
TokenPath = Annotated[str, Path(min_length=1, max_length=32, description="the token's id")]
AddUser = Annotated[Act, acting(Permission.USERS, "user.add")]
ChangeUser = Annotated[Act, acting(Permission.USERS, "user.change", "user:{name}")]
CreateToken = Annotated[Act, acting(Permission.TOKENS, "token.create")]
RevokeToken = Annotated[Act, acting(Permission.TOKENS, "token.revoke", "token:{token_id}")]


def _accounts(gate: Gate) -> Accounts:
    if gate.accounts is None:
        raise HTTPException(status.HTTP_503_SERVICE_UNAVAILABLE, "this controller keeps no accounts")
    return gate.accounts


def _refused(exc: Exception) -> HTTPException:
    if isinstance(exc, LookupError):
        return HTTPException(status.HTTP_404_NOT_FOUND, str(exc.args[0]) if exc.args else "not found")
    return HTTPException(status.HTTP_409_CONFLICT, str(exc))


@users.get("", response_model=list[UserPublic], dependencies=[can(Permission.USERS)])
async def list_users(gate: GateDep) -> Any:
    return [user_public(u) for u in await _accounts(gate).users()]


@users.post("", response_model=UserPublic, status_code=status.HTTP_201_CREATED,
            responses={409: {"description": "the name is taken, or the password too short"}})
async def add_user(body: UserCreate, act: AddUser, gate: GateDep) -> Any:
    act.target = f"user:{body.name}"
    async with act:
        try:
            user = await _accounts(gate).add_user(body.name, body.role, body.password)
        except AccessError as exc:
            raise _refused(exc) from None
    return user_public(user)


@users.patch("/{name}", response_model=UserPublic,
             responses={404: {"description": "no such user"},
                        409: {"description": "refused, with the reason (a password too short, ...)"}})
async def change_user(name: UserPath, body: UserChange, act: ChangeUser, gate: GateDep) -> Any:
    """Change a user's role or password, or disable (and enable) the account. A user whose role,
    password or account changes is logged out everywhere."""
    act.action = "user." + ("disable" if body.disabled else "enable" if body.disabled is False
                            else "change")
    async with act:
        try:
            user = await _accounts(gate).change_user(name, role=body.role, password=body.password,
                                                     disabled=body.disabled)
        except (AccessError, LookupError) as exc:
            raise _refused(exc) from None
        gate.end_sessions_of(name)
    return user_public(user)


@tokens.get("", response_model=list[TokenPublic], dependencies=[can(Permission.TOKENS)])
async def list_tokens(gate: GateDep, request: Request) -> Any:
    now = gate.clock()
    return [token_public(t, now) for t in await _accounts(gate).tokens()]


@tokens.post("", response_model=TokenCreated, status_code=status.HTTP_201_CREATED,
             responses={409: {"description": "a scope on a role token, or an integration token without one"}})
async def create_token(body: TokenCreate, act: CreateToken, gate: GateDep) -> Any:
    """A new token. Its secret is in this answer only; the controller keeps a digest of it."""
    async with act:
        try:
            token, secret = await _accounts(gate).create_token(
                body.label, role=body.role, scopes=body.scopes, expires_in_s=body.expires_in_s,
                by=act.principal.name)
        except AccessError as exc:
            raise _refused(exc) from None
        act.target = f"token:{token.id}"
    return TokenCreated(**token_public(token, gate.clock()).model_dump(), token=secret)


@tokens.post("/{token_id}/revoke", response_model=TokenPublic,
             responses={404: {"description": "no such token"}})
async def revoke_token(token_id: TokenPath, act: RevokeToken, gate: GateDep) -> Any:
    """Revoke a token: it is refused from now on."""
    async with act:
        try:
            token = await _accounts(gate).revoke_token(token_id)
        except LookupError as exc:
            raise _refused(exc) from None
        gate.forget_token(token.digest)
    return token_public(token, gate.clock())


def user_public(user: User) -> UserPublic:
    return UserPublic(name=user.name, role=user.role.value, disabled=user.disabled,
                      created_at=iso(user.created_at) or "", changed_at=iso(user.changed_at) or "")


def token_public(token: ApiToken, now: float) -> TokenPublic:
    return TokenPublic(id=token.id, label=token.label, role=token.role.value,
                       scopes=[s.value for s in token.scopes], status=token.status(now),
                       created_at=iso(token.created_at) or "", created_by=token.created_by,
                       expires_at=iso(token.expires_at), revoked_at=iso(token.revoked_at))
