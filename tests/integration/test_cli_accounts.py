"""`floorctl users` and `floorctl tokens` on a site's database, and `run --no-auth` only on loopback."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from controller.cli import main
from controller.security.auth_users import Accounts
from controller.store.accounts import AccountRepository
from controller.store.db import make_engine
from controller.store.writer import StoreWriter


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


async def _check(url: str, name: str, password: str, secret: str) -> tuple[bool, bool]:
    db = make_engine(url)
    writer = StoreWriter(url)
    await writer.start()
    try:
        accounts = Accounts(AccountRepository(db, writer))
        user = await accounts.check_password(name, password)
        token = await accounts.token_for(secret)
        return user is not None, token is not None
    finally:
        await writer.close()
        await db.dispose()


def test_users_and_tokens_from_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    url = f"sqlite:///{tmp_path / 'site.db'}"
    secret_file = tmp_path / "pw"
    secret_file.write_text("a long enough password\n")
    code, out, _ = run(capsys, "users", "add", "alice", "--role", "supervisor", "--password-file",
                       str(secret_file), "--database-url", url)
    assert (code, out) == (0, "user alice added as supervisor\n")
    code, _, err = run(capsys, "users", "add", "alice", "--role", "admin", "--password-file",
                       str(secret_file), "--database-url", url)
    assert (code, err.strip()) == (2, "floorctl users: user alice exists")
    short = tmp_path / "short"
    short.write_text("short\n")
    code, _, err = run(capsys, "users", "add", "bob", "--role", "viewer", "--password-file", str(short),
                       "--database-url", url)
    assert code == 2 and "at least 10 characters" in err
    code, out, _ = run(capsys, "users", "list", "--database-url", url)
    assert code == 0 and out.split()[:3] == ["alice", "supervisor", "enabled"]

    code, out, _ = run(capsys, "tokens", "create", "--label", "wms", "--scope", "orders:write", "--scope",
                       "read", "--expires", "90d", "--database-url", url)
    assert code == 0
    lines = out.splitlines()
    token_id, secret = lines[0].split()[1], lines[1]
    assert secret.startswith("fct_") and "orders:write read" in lines[0]
    assert asyncio.run(_check(make_url(url), "alice", "a long enough password", secret)) == (True, True)
    code, out, _ = run(capsys, "tokens", "list", "--database-url", url)
    assert code == 0 and token_id in out and "active" in out and secret not in out
    code, out, _ = run(capsys, "tokens", "revoke", token_id, "--database-url", url)
    assert code == 0 and "revoked" in out
    assert asyncio.run(_check(make_url(url), "alice", "wrong password!", secret)) == (False, False)
    code, _, err = run(capsys, "tokens", "create", "--role", "admin", "--scope", "read",
                       "--database-url", url)
    assert code == 2 and "scopes are for integration" in err
    code, _, err = run(capsys, "tokens", "revoke", "tnope", "--database-url", url)
    assert (code, err.strip()) == (2, "floorctl tokens: no token tnope")
    with pytest.raises(SystemExit):
        main(["tokens", "create", "--expires", "soon", "--database-url", url])


def make_url(url: str) -> str:
    from controller.store.db import normalise_url

    return normalise_url(url)


def test_run_refuses_no_auth_unless_the_api_listens_on_loopback(capsys: pytest.CaptureFixture[str]) -> None:
    site = str(Path(__file__).resolve().parents[2] / "config" / "demo.yaml")
    code, _, err = run(capsys, "run", "--site", site, "--host", "0.0.0.0", "--no-auth")
    assert code == 2 and "--no-auth" in err and "refused on 0.0.0.0" in err
