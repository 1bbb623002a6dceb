"""Users, roles, tokens, sessions and the audit trail over HTTP, against a real database (SQLite file
and PostgreSQL, test_api's `db` fixture) with the real store writer, password hashing and the app.

The permission walk reads the table in docs/security.md and asks every route of the app as every
role: the table and the app must agree, and a route missing from the table fails it.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.routing import APIRoute
from sqlalchemy.ext.asyncio import AsyncEngine
from starlette.routing import Mount

from controller.api import Gate, create_app
from controller.api.auth import CSRF_HEADER, SESSION_COOKIE
from controller.api.routes import events
from controller.domain.access import Role
from controller.engine.alarms import AlarmMonitor
from controller.security.auth_users import Accounts
from controller.site import ApiSettings
from controller.store.accounts import AccountRepository
from controller.store.writer import StoreWriter
from tests.integration import test_api
from tests.integration.test_api import T0, FakeFloor, _is_engine

db = test_api.db
floor = test_api.floor

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "correct horse battery"
PAUSE = "/api/devices/loop-1/control"


# ---- helpers other API tests use ------------------------------------------------------------------
async def gate_with_users(db: AsyncEngine, writer: StoreWriter, users: dict[str, str], *,
                          clock: Callable[[], float] | None = None,
                          settings: ApiSettings | None = None) -> Gate:
    """A Gate on the test's database with these users (name: role), each with PASSWORD."""
    accounts = Accounts(AccountRepository(db, writer), **({"clock": clock} if clock else {}))
    for name, role in users.items():
        await accounts.add_user(name, role, PASSWORD)
    gate = Gate(accounts, settings or ApiSettings(), **({"clock": clock} if clock else {}))
    await gate.start()
    return gate


@contextlib.asynccontextmanager
async def logged_in(app: Any, name: str, password: str = PASSWORD) -> AsyncIterator[httpx.AsyncClient]:
    """A client logged in through POST /api/auth/login, sending its CSRF token with every request."""
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://floor") as client:
        answer = await client.post("/api/auth/login", json={"name": name, "password": password})
        assert answer.status_code == 200, answer.text
        client.headers[CSRF_HEADER] = answer.json()["csrf"]
        yield client


# ---- fixtures -------------------------------------------------------------------------------------
PEOPLE = ["viewer", "operator", "supervisor", "admin"]


class Clock:
    def __init__(self) -> None:
        self.now = T0 + 60

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
async def gate(db: AsyncEngine, writer: StoreWriter, clock: Clock) -> Gate:
    users = {**{f"{r}-1": r for r in PEOPLE}, "spare": "viewer"}
    return await gate_with_users(db, writer, users, clock=clock)


@pytest.fixture
def app(floor: FakeFloor, db: AsyncEngine, gate: Gate, monitor: AlarmMonitor) -> Any:
    return create_app(_is_engine(floor), db, gate=gate, alarms=monitor)


@pytest.fixture
async def anon(app: Any) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://floor") as client:
        yield client


async def audit_rows(gate: Gate, admin: httpx.AsyncClient, **filters: str) -> list[dict[str, Any]]:
    assert gate.accounts is not None
    await gate.accounts.repo.flush()
    page = await admin.get("/api/audit", params={**filters, "limit": 1000})
    assert page.status_code == 200, page.text
    return list(page.json()["items"])


# ---- the permission table ------------------------------------------------------------------------
COLUMNS = ["viewer", "operator", "supervisor", "admin", "read", "orders:write", "none"]


def permission_table() -> dict[tuple[str, str], dict[str, str]]:
    text = (ROOT / "docs" / "security.md").read_text()
    block = text.split("<!-- permission-table -->")[1].split("<!-- /permission-table -->")[0]
    rows: dict[tuple[str, str], dict[str, str]] = {}
    for line in block.strip().splitlines()[2:]:
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        method, path, _permission, *answers = cells
        assert len(answers) == len(COLUMNS), line
        key = (method, path.strip("`"))
        assert key not in rows, f"{key} twice in the table"
        rows[key] = dict(zip(COLUMNS, answers, strict=True))
    return rows


def app_routes(app: Any) -> set[tuple[str, str]]:
    """(method, path) of every route the app answers, routers included as FastAPI resolves them."""
    try:
        from fastapi.routing import iter_route_contexts  # FastAPI >= 0.16x: included routers stay lazy
        contexts: list[Any] = list(iter_route_contexts(app.routes))
    except ImportError:
        contexts = list(app.routes)
    found: set[tuple[str, str]] = set()
    for ctx in contexts:
        route = getattr(ctx, "original_route", ctx)
        if isinstance(route, APIRoute):
            found |= {(method, ctx.path) for method in ctx.methods}
        elif isinstance(route, Mount):
            found.add(("GET", f"{ctx.path}/{{path}}"))
        else:
            raise TypeError(f"a route of a kind the walk does not know: {route!r}")
    return found


def test_the_table_names_every_route_of_the_app_and_no_other(app: Any) -> None:
    table = set(permission_table())
    routes = app_routes(app)
    assert routes - table == set(), "routes missing from docs/security.md's permission table"
    assert table - routes == set(), "rows of the permission table with no route"


async def test_every_route_answers_every_role_as_the_table_says(app: Any, gate: Gate, anon: httpx.AsyncClient,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    async def one_event(self: Any, lifetime_s: float = 0) -> AsyncIterator[bytes]:
        yield b"retry: 1000\n\n"

    monkeypatch.setattr(events.FloorFeed, "stream", one_event)  # a stream that ends at once
    accounts = gate.accounts
    assert accounts is not None
    reader, _ = await accounts.create_token("wms-read", scopes=["read"], expires_in_s=None, by="test")
    _, read_secret = reader, (await accounts.create_token("r", scopes=["read"], expires_in_s=None, by="t"))[1]
    _, write_secret = await accounts.create_token("wms", scopes=["orders:write"], expires_in_s=None, by="t")
    spare_token, _ = await accounts.create_token("spare", scopes=["read"], expires_in_s=None, by="t")
    params = {"order_id": "3", "device_id": "loop-1", "alarm_id": "999", "name": "spare",
              "token_id": spare_token.id}
    counter = iter(range(10_000))

    def body(method: str, path: str) -> Any:
        n = next(counter)
        return {
            ("POST", "/api/orders"): {"external_id": f"WALK-{n}", "lines": [{"sku": "SKU-0001", "qty": 1}],
                                      "carrier": "DHL"},
            ("POST", "/api/devices/{device_id}/control"): {"action": "put_back"},
            ("POST", "/api/users"): {"name": f"walk-{n}", "role": "viewer", "password": PASSWORD},
            ("PATCH", "/api/users/{name}"): {},
            ("POST", "/api/tokens"): {"label": f"walk-{n}", "scopes": ["read"]},
            ("POST", "/api/auth/login"): {"name": "spare", "password": PASSWORD},
        }.get((method, path))

    def credentials(column: str) -> dict[str, str]:
        if column in PEOPLE:
            secret, session = gate.open_session(f"{column}-1", Role(column))
            return {"Cookie": f"{SESSION_COOKIE}={secret}", CSRF_HEADER: session.csrf}
        if column == "read":
            return {"Authorization": f"Bearer {read_secret}"}
        if column == "orders:write":
            return {"Authorization": f"Bearer {write_secret}"}
        return {}

    wrong: list[str] = []
    for (method, path), expected in sorted(permission_table().items()):
        url = re.sub(r"\{(\w+)\}", lambda m: params.get(m.group(1), m.group(1)), path)
        if path.startswith("/static/apidocs/"):
            url = "/static/apidocs/swagger-ui.css"
        elif path.startswith("/static/"):
            url = "/static/panel.css"
        for column in COLUMNS:
            anon.cookies.clear()
            answer = await anon.request(method, url, headers=credentials(column), json=body(method, path))
            want = expected[column]
            if want == "site file":
                want = "open" if path in gate.settings.open_paths else "401"
            got = answer.status_code
            ok = {"✓": got not in (401, 403) and got < 500, "open": got not in (401, 403) and got < 500,
                  "403": got == 403, "401": got == 401,
                  "→ login": got == 303 and answer.headers["location"].startswith("/login")}[want]
            if not ok:
                wrong.append(f"{method} {url} as {column}: {got} (the table says {want}) {answer.text[:120]}")
    assert wrong == []


@pytest.mark.parametrize("open_paths, healthz, metrics", [
    (["/healthz"], 200, 401), (["/healthz", "/metrics"], 200, 200), ([], 401, 401)])
async def test_healthz_and_metrics_open_only_where_the_site_file_says(
        floor: FakeFloor, db: AsyncEngine, writer: StoreWriter, open_paths: list[str], healthz: int,
        metrics: int) -> None:
    settings = ApiSettings.model_validate({"open_paths": open_paths})
    gate = await gate_with_users(db, writer, {}, settings=settings)
    app = create_app(_is_engine(floor), db, gate=gate)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://floor") as client:
        assert (await client.get("/healthz")).status_code == healthz
        assert (await client.get("/metrics")).status_code == metrics
        assert (await client.get("/api/orders")).status_code == 401


# ---- sessions --------------------------------------------------------------------------------------
async def test_login_sets_a_strict_httponly_cookie_and_logout_ends_the_session(app: Any, gate: Gate) -> None:
    async with logged_in(app, "operator-1") as client:
        me = (await client.get("/api/auth/me")).json()
        assert (me["name"], me["role"], me["via"]) == ("operator-1", "operator", "session")
        assert "orders:cancel" in me["permissions"] and "devices:control" not in me["permissions"]
        assert me["csrf"] == client.headers[CSRF_HEADER]
        assert (await client.get("/api/orders")).status_code == 200
        assert (await client.post("/api/auth/logout")).status_code == 204
        assert (await client.get("/api/orders")).status_code == 401
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://floor") as client:
        answer = await client.post("/api/auth/login", json={"name": "viewer-1", "password": PASSWORD})
        cookies = answer.headers.get_list("set-cookie")
        session = next(c for c in cookies if c.startswith(SESSION_COOKIE))
        assert "httponly" in session.lower() and "samesite=strict" in session.lower()
        assert "secure" not in session.lower()  # plain HTTP here; over TLS it is Secure
        csrf = next(c for c in cookies if c.startswith("floorctl_csrf"))
        assert "httponly" not in csrf.lower() and "samesite=strict" in csrf.lower()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="https://floor") as client:
        answer = await client.post("/api/auth/login", json={"name": "viewer-1", "password": PASSWORD})
        assert all("; secure" in c.lower() for c in answer.headers.get_list("set-cookie"))


async def test_a_state_change_without_the_csrf_token_is_refused_and_audited(app: Any, gate: Gate) -> None:
    async with logged_in(app, "operator-1") as client, logged_in(app, "admin-1") as admin:
        token = client.headers.pop(CSRF_HEADER)
        assert (await client.post("/api/orders/3/cancel")).status_code == 403
        forged = await client.post("/api/orders/3/cancel", headers={CSRF_HEADER: token[:-2] + "xx"})
        assert forged.status_code == 403
        assert (await client.get("/api/orders/3")).json()["state"] == "held"  # reads need no token
        done = await client.post("/api/orders/3/cancel", headers={CSRF_HEADER: token})
        assert done.status_code == 200, done.text
        rows = await audit_rows(gate, admin, target="order:3")
        assert [(r["actor"], r["action"], r["outcome"]) for r in rows] == [
            ("operator-1", "order.cancel", "ok"),
            ("anonymous", "order.cancel", "denied: missing or wrong X-CSRF-Token"),
            ("anonymous", "order.cancel", "denied: missing or wrong X-CSRF-Token")]


async def test_a_session_ends_after_the_idle_time_and_background_requests_do_not_extend_it(
        app: Any, gate: Gate, clock: Clock) -> None:
    idle = gate.settings.session_idle_s
    async with logged_in(app, "viewer-1") as client:
        clock.now += idle - 10
        assert (await client.get("/api/orders")).status_code == 200  # a person's request: the clock restarts
        clock.now += idle - 10
        background = {"X-Floorctl-Background": "1"}
        assert (await client.get("/api/orders", headers=background)).status_code == 200
        assert (await client.get("/api/events/latest")).status_code == 200
        clock.now += 20  # idle since the last person's request
        assert (await client.get("/api/orders")).status_code == 401
        page = await client.get("/", follow_redirects=False)
        assert (page.status_code, page.headers["location"]) == (303, "/login?next=%2F")


async def test_a_session_ends_after_its_longest_life_however_busy(app: Any, gate: Gate, clock: Clock) -> None:
    async with logged_in(app, "viewer-1") as client:
        for _ in range(int(gate.settings.session_max_s // 1000)):
            clock.now += 1000
            assert (await client.get("/api/orders")).status_code == 200
        clock.now += 1000
        assert (await client.get("/api/orders")).status_code == 401


async def test_sessions_survive_a_restart_of_the_app(app: Any, gate: Gate, floor: FakeFloor, db: AsyncEngine,
                                                     clock: Clock) -> None:
    async with logged_in(app, "viewer-1") as client:
        assert gate.accounts is not None
        await gate.accounts.repo.flush()
        again = Gate(gate.accounts, gate.settings, clock=clock)
        await again.start()
        restarted = create_app(_is_engine(floor), db, gate=again)
        client._transport = httpx.ASGITransport(app=restarted)
        assert (await client.get("/api/orders")).status_code == 200


# ---- brute force -----------------------------------------------------------------------------------
async def test_failed_logins_back_off_per_account_and_per_address_and_are_audited(
        app: Any, gate: Gate, clock: Clock, caplog: pytest.LogCaptureFixture) -> None:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://floor") as client:
        async def login(name: str, password: str) -> httpx.Response:
            return await client.post("/api/auth/login", json={"name": name, "password": password})

        for _ in range(gate.settings.login_free_failures):
            assert (await login("viewer-1", "wrong password")).status_code == 401
        assert (await login("viewer-1", "wrong password")).status_code == 401  # 4th: 1 s of back-off starts
        throttled = await login("viewer-1", PASSWORD)  # even the right password waits
        assert (throttled.status_code, throttled.headers["retry-after"]) == (429, "1")
        clock.now += 1.5
        assert (await login("viewer-1", "wrong again!")).status_code == 401  # 5th: now 2 s
        clock.now += 1.5
        assert (await login("viewer-1", PASSWORD)).status_code == 429
        # The address is held back too: another account from the same address waits as well.
        assert (await login("operator-1", PASSWORD)).status_code == 429
        clock.now += 1
        assert (await login("viewer-1", PASSWORD)).status_code == 200  # and a success clears both
        assert (await login("nobody-here", "x" * 12)).status_code == 401
        assert (await login("operator-1", PASSWORD)).status_code == 200
    assert any("login" in r.message and "wrong name or password" in r.message for r in caplog.records)
    async with logged_in(app, "admin-1") as admin:
        rows = await audit_rows(gate, admin, action="login")
    outcomes = [(r["actor"], r["outcome"]) for r in reversed(rows)]
    wrong, held = "failed: wrong name or password", "failed: throttled for 1 s"
    assert outcomes == [("viewer-1", wrong)] * 4 + [
        ("viewer-1", held), ("viewer-1", wrong), ("viewer-1", held), ("operator-1", held), ("viewer-1", "ok"),
        ("nobody-here", wrong), ("operator-1", "ok"), ("admin-1", "ok")]
    assert all(r["address"] == "127.0.0.1" and r["target"] == f"user:{r['actor']}" for r in rows)


# ---- tokens -----------------------------------------------------------------------------------------
async def test_tokens_expire_and_revoke_and_are_stored_hashed(
        app: Any, gate: Gate, clock: Clock, anon: httpx.AsyncClient, db: AsyncEngine) -> None:
    async with logged_in(app, "admin-1") as admin:
        made = await admin.post("/api/tokens", json={"label": "wms", "scopes": ["read", "orders:write"],
                                                     "expires_in_s": 3600})
        assert made.status_code == 201, made.text
        token = made.json()
        assert token["token"].startswith("fct_") and token["status"] == "active"
        bearer = {"Authorization": f"Bearer {token['token']}"}
        assert (await anon.get("/api/orders", headers=bearer)).status_code == 200
        created = await anon.post("/api/orders", headers=bearer, json={
            "external_id": "WMS-1", "lines": [{"sku": "SKU-0001", "qty": 1}], "carrier": "DHL"})
        assert created.status_code == 201, created.text
        assert (await anon.post("/api/orders/2/resolve", headers=bearer)).status_code == 403
        listed = (await admin.get("/api/tokens")).json()
        assert "token" not in listed[0] and {t["id"] for t in listed} == {token["id"]}
        async with db.connect() as conn:
            from sqlalchemy import text
            stored = (await conn.execute(text("SELECT digest FROM api_tokens"))).scalar_one()
        assert token["token"] not in stored and len(stored) == 64

        clock.now += 3601
        expired = await anon.get("/api/orders", headers=bearer)
        assert (expired.status_code, expired.json()["detail"]) == (401, "the token is expired")
        clock.now -= 3601
        assert (await anon.get("/api/orders", headers=bearer)).status_code == 200
        revoked = await admin.post(f"/api/tokens/{token['id']}/revoke")
        assert revoked.json()["status"] == "revoked"
        answer = await anon.get("/api/orders", headers=bearer)
        assert (answer.status_code, answer.json()["detail"]) == (401, "the token is revoked")
        for wrong in ("Bearer fct_nope", "Basic eDp5"):
            assert (await anon.get("/api/orders", headers={"Authorization": wrong})).status_code == 401
        rows = await audit_rows(gate, admin, actor=f"token:{token['id']}")
        assert [(r["action"], r["target"], r["outcome"]) for r in rows] == [
            ("order.resolve", "order:2", "denied: needs orders:resolve"),
            ("order.create", rows[1]["target"], "ok")]
        assert rows[1]["detail"] == "WMS-1" and rows[1]["role"] == "integration"
        made_rows = await audit_rows(gate, admin, action="token.")
        target = f"token:{token['id']}"
        assert [(r["actor"], r["action"], r["target"]) for r in made_rows] == [
            ("admin-1", "token.revoke", target), ("admin-1", "token.create", target)]


async def test_a_role_token_acts_with_the_role_and_scopes_are_for_integration_only(
        app: Any, anon: httpx.AsyncClient) -> None:
    async with logged_in(app, "admin-1") as admin:
        bad = await admin.post("/api/tokens", json={"label": "x", "role": "supervisor", "scopes": ["read"]})
        assert bad.status_code == 409
        assert (await admin.post("/api/tokens", json={"label": "x"})).status_code == 409  # no scope
        made = (await admin.post("/api/tokens", json={"label": "script", "role": "supervisor"})).json()
    bearer = {"Authorization": f"Bearer {made['token']}"}
    paused = await anon.post("/api/devices/loop-1/control", headers=bearer, json={"action": "pause"})
    assert paused.status_code == 200
    assert (await anon.get("/api/users", headers=bearer)).status_code == 403


# ---- users ------------------------------------------------------------------------------------------
async def test_users_added_changed_and_disabled_by_an_admin(app: Any, gate: Gate) -> None:
    async with logged_in(app, "admin-1") as admin:
        added = await admin.post("/api/users", json={"name": "sam", "role": "operator", "password": PASSWORD})
        assert added.status_code == 201, added.text
        assert (await admin.post("/api/users", json={"name": "sam", "role": "viewer",
                                                     "password": PASSWORD})).status_code == 409
        assert (await admin.post("/api/users", json={"name": "kim", "role": "viewer",
                                                     "password": "short"})).status_code == 409
        assert (await admin.post("/api/users", json={"name": "kim", "role": "integration",
                                                     "password": PASSWORD})).status_code == 422
        async with logged_in(app, "sam") as sam:
            assert (await sam.post(PAUSE, json={"action": "pause"})).status_code == 403
            promoted = await admin.patch("/api/users/sam", json={"role": "supervisor"})
            assert promoted.json()["role"] == "supervisor"
            assert (await sam.get("/api/orders")).status_code == 401  # logged out by the change
        async with logged_in(app, "sam") as sam:
            assert (await sam.post(PAUSE, json={"action": "pause"})).status_code == 200
            assert (await admin.patch("/api/users/sam", json={"disabled": True})).status_code == 200
            assert (await sam.get("/api/orders")).status_code == 401
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://floor") as c:
            refused = await c.post("/api/auth/login", json={"name": "sam", "password": PASSWORD})
            assert refused.status_code == 401
        assert (await admin.patch("/api/users/nobody", json={"disabled": True})).status_code == 404
        names = {u["name"]: u for u in (await admin.get("/api/users")).json()}
        assert names["sam"]["disabled"] is True and "password_hash" not in names["sam"]
        rows = await audit_rows(gate, admin, target="user:sam")
        assert [(r["action"], r["outcome"].split(":")[0]) for r in reversed(rows)] == [
            ("user.add", "ok"), ("user.add", "refused"), ("login", "ok"), ("user.change", "ok"),
            ("login", "ok"), ("user.disable", "ok"), ("login", "failed")]


# ---- the audit trail of each state-changing action ----------------------------------------------------
async def test_every_state_changing_action_is_one_audit_row(app: Any, gate: Gate, monitor: AlarmMonitor,
                                                            floor: FakeFloor) -> None:
    monitor.check(T0 + 50)
    await monitor.store.flush()
    async with logged_in(app, "supervisor-1") as sup, logged_in(app, "admin-1") as admin:
        alarm = (await sup.get("/api/alarms", params={"active": "true"})).json()["items"][0]
        batch = [{"external_id": f"AUD-{n}", "lines": [{"sku": "SKU-0001", "qty": 1}], "carrier": "DHL"}
                 for n in (1, 2)]
        assert (await admin.post("/api/orders", json=batch)).status_code == 201
        assert (await sup.post("/api/orders/3/cancel")).status_code == 200
        assert (await sup.post("/api/orders/1/cancel")).status_code == 409  # shipped
        assert (await sup.post("/api/orders/2/resolve")).status_code == 200
        assert (await sup.post(PAUSE, json={"action": "take_out"})).status_code == 200
        estop = await sup.post("/api/devices/prn-1/control", json={"action": "estop_reset"})
        assert estop.status_code == 409
        acked = await sup.post(f"/api/alarms/{alarm['id']}/ack")
        assert acked.json()["acked_by"] == "supervisor-1"
        rows = await audit_rows(gate, admin)
        mine = [(r["actor"], r["role"], r["action"], r["target"], r["outcome"].split(":")[0])
                for r in reversed(rows) if r["action"] != "login"]
        new_ids = [r["target"] for r in reversed(rows) if r["action"] == "order.create"]
        assert mine == [
            ("admin-1", "admin", "order.create", new_ids[0], "ok"),
            ("admin-1", "admin", "order.create", new_ids[1], "ok"),
            ("supervisor-1", "supervisor", "order.cancel", "order:3", "ok"),
            ("supervisor-1", "supervisor", "order.cancel", "order:1", "refused"),
            ("supervisor-1", "supervisor", "order.resolve", "order:2", "ok"),
            ("supervisor-1", "supervisor", "device.take_out", "device:loop-1", "ok"),
            ("supervisor-1", "supervisor", "device.estop_reset", "device:prn-1", "refused"),
            ("supervisor-1", "supervisor", "alarm.ack", f"alarm:{alarm['id']}", "ok")]
        assert all(r["address"] and r["at"].startswith("2024-05-01T08:31:00") for r in rows)
        # the order's own view: anyone who reads sees who did what to it, without addresses
        async with logged_in(app, "viewer-1") as viewer:
            view = (await viewer.get("/api/orders/3/audit")).json()
            assert [(r["actor"], r["action"], r["outcome"], r["address"]) for r in view["items"]] == [
                ("supervisor-1", "order.cancel", "ok", None)]
            assert (await viewer.get("/api/orders/424242/audit")).status_code == 404
            assert (await viewer.get("/api/audit")).status_code == 403
            events_page = (await viewer.get("/api/devices/loop-1/events")).json()
            assert [(e["actor"], e["action"], e["outcome"]) for e in events_page["items"]] == [
                ("supervisor-1", "take_out", "ok")]
        families = await audit_rows(gate, admin, action="device.")
        assert {r["action"] for r in families} == {"device.take_out", "device.estop_reset"}
        acks = await audit_rows(gate, admin, actor="supervisor-1", action="alarm.ack")
        assert [r["actor"] for r in acks] == ["supervisor-1"]


async def test_the_panel_page_needs_a_login_and_the_login_page_has_no_inline_script(
        app: Any, anon: httpx.AsyncClient) -> None:
    page = await anon.get("/?order=42", follow_redirects=False)
    assert (page.status_code, page.headers["location"]) == (303, "/login?next=%2F%3Forder%3D42")
    login = await anon.get("/login")
    assert login.status_code == 200
    scripts = re.findall(r"<script([^>]*)>(.*?)</script>", login.text, re.DOTALL)
    assert scripts and all('src="/static/' in attrs and not body.strip() for attrs, body in scripts)
    assert "onclick" not in login.text and "onsubmit" not in login.text
    assert (await anon.get("/static/login.js")).status_code == 200
    async with logged_in(app, "viewer-1") as viewer:
        assert (await viewer.get("/")).status_code == 200
        # (the stream itself runs for 15 s, and the in-process client reads it whole: the browser tests
        # of the panel read it live with a session cookie)
        assert (await viewer.get("/api/events/latest")).status_code == 200
    assert (await anon.get("/api/events/stream")).status_code == 401


async def test_without_auth_every_request_is_let_in_as_no_auth(floor: FakeFloor, db: AsyncEngine,
                                                               writer: StoreWriter) -> None:
    gate = Gate.without_auth(Accounts(AccountRepository(db, writer)))
    app = create_app(_is_engine(floor), db, gate=gate)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://floor") as client:
        assert (await client.post("/api/orders/3/cancel")).status_code == 200
        await writer.flush()
        rows = (await client.get("/api/audit")).json()["items"]
        assert [(r["actor"], r["action"], r["target"]) for r in rows] == [
            ("no-auth", "order.cancel", "order:3")]
