"""`floorctl users ...` and `floorctl tokens ...`: accounts of the API and panel, on the site's database
(the controller may be running: it reads users at each login and tokens at first use)."""

from __future__ import annotations

import argparse
import contextlib
import getpass
import re
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

from controller.domain.access import AccessError
from controller.security.auth_users import Accounts
from controller.store.accounts import AccountRepository
from controller.store.db import create_schema, database_url, make_engine
from controller.store.writer import StoreWriter

_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhd]?)$")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


class AccountsUsageError(Exception):
    """A bad argument: the command line says so and exits 2."""


def duration_s(text: str) -> float:
    """'90d', '12h', '30m', '3600s' or '3600' in seconds."""
    found = _DURATION.match(text.strip())
    if not found or float(found.group(1)) <= 0:
        raise argparse.ArgumentTypeError(f"not a duration: {text!r} (e.g. 90d, 12h, 30m, 3600)")
    return float(found.group(1)) * _UNIT[found.group(2)]


def add_arguments(sub: argparse._SubParsersAction[argparse.ArgumentParser],
                  storage: object) -> None:
    """The `users` and `tokens` commands; `storage(parser, data_dir)` adds --data-dir and --database-url."""
    users = sub.add_parser("users", help="people who log in to the panel and the API")
    users_sub = users.add_subparsers(dest="users_command", required=True, metavar="ACTION")
    add = users_sub.add_parser("add", help="add a user (asks for the password, or --password-file)")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=["viewer", "operator", "supervisor", "admin"])
    add.add_argument("--password-file", type=Path, help="read the password from the first line of this file")
    listing = users_sub.add_parser("list", help="list the users")
    tokens = sub.add_parser("tokens", help="API tokens for a WMS, a scraper or a script")
    tokens_sub = tokens.add_subparsers(dest="tokens_command", required=True, metavar="ACTION")
    create = tokens_sub.add_parser("create", help="make a token and print it (once)")
    create.add_argument("--label", default="integration", help="what the token is for (default integration)")
    create.add_argument("--scope", action="append", default=[], choices=["read", "orders:write"],
                        help="an integration token's scope (repeatable)")
    create.add_argument("--role", default="integration",
                        choices=["integration", "viewer", "operator", "supervisor", "admin"],
                        help="integration (default: only its scopes), or act as a person's role")
    create.add_argument("--expires", type=duration_s,
                        help="lifetime: 90d, 12h, 30m, 3600 (default: until revoked)")
    tokens_list = tokens_sub.add_parser("list", help="list the tokens (never their secrets)")
    revoke = tokens_sub.add_parser("revoke", help="revoke a token by its id")
    revoke.add_argument("token_id")
    for parser in (add, listing, create, tokens_list, revoke):
        storage(parser, "data")  # type: ignore[operator]


@contextlib.asynccontextmanager
async def accounts_of(args: argparse.Namespace) -> AsyncIterator[Accounts]:
    url = database_url(args.data_dir, args.database_url)
    db = make_engine(url)
    writer = StoreWriter(url)
    try:
        await create_schema(db)
        await writer.start()
        yield Accounts(AccountRepository(db, writer))
    finally:
        await writer.close()
        await db.dispose()


def _password(args: argparse.Namespace) -> str:
    if args.password_file is not None:
        lines = args.password_file.read_text().splitlines()
        if not lines or not lines[0]:
            raise AccountsUsageError(f"{args.password_file} is empty")
        return lines[0]
    if not sys.stdin.isatty():
        raise AccountsUsageError("no terminal to ask for the password: use --password-file")
    first = getpass.getpass(f"Password for {args.name}: ")
    if getpass.getpass("Again: ") != first:
        raise AccountsUsageError("the passwords differ")
    return first


async def cmd_users(args: argparse.Namespace) -> int:
    async with accounts_of(args) as accounts:
        if args.users_command == "add":
            password = _password(args)
            try:
                user = await accounts.add_user(args.name, args.role, password)
            except AccessError as exc:
                raise AccountsUsageError(str(exc)) from None
            print(f"user {user.name} added as {user.role.value}")
            return 0
        for user in await accounts.users():
            state = "disabled" if user.disabled else "enabled"
            print(f"{user.name:<24} {user.role.value:<11} {state:<9} since {_day(user.created_at)}")
    return 0


async def cmd_tokens(args: argparse.Namespace) -> int:
    async with accounts_of(args) as accounts:
        if args.tokens_command == "create":
            try:
                token, secret = await accounts.create_token(args.label, role=args.role, scopes=args.scope,
                                                            expires_in_s=args.expires, by="floorctl tokens")
            except AccessError as exc:
                raise AccountsUsageError(str(exc)) from None
            what = " ".join(s.value for s in token.scopes) or token.role.value
            until = _day(token.expires_at) if token.expires_at else "revoked"
            print(f"token {token.id} ({token.label}: {what}, until {until}):\n{secret}\n"
                  "Shown this once: send it as Authorization: Bearer <token>.", flush=True)
            return 0
        if args.tokens_command == "revoke":
            try:
                token = await accounts.revoke_token(args.token_id)
            except LookupError as exc:
                raise AccountsUsageError(str(exc.args[0])) from None
            print(f"token {token.id} ({token.label}) revoked; a running controller refuses it within 5 s")
            return 0
        now = time.time()
        for token in await accounts.tokens():
            what = " ".join(s.value for s in token.scopes) or token.role.value
            expires = _day(token.expires_at) if token.expires_at else "-"
            print(f"{token.id:<14} {token.status(now):<8} {token.label:<20} {what:<20} expires {expires}")
    return 0


def _day(at: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M", time.localtime(at)) if at else "-"
