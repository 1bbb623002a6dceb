"""HTTP hardening (docs/api.md, Limits and headers): the body and batch limits, ids past 64 bits, no
NUL characters, every method of a path in Allow, security headers on every answer (the docs pages
with their own nonce), CORS only for the site's origins, and a plain 500 with no trace. Against a real
database (SQLite and PostgreSQL, test_api's `db`) and test_api's fake engine, with authentication off:
these are about the HTTP layer around it."""

from __future__ import annotations

import json
import logging
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from controller.api import Gate, create_app
from controller.api.hardening import CSP, InternalErrors
from controller.site import ApiSettings
from tests.integration import test_api
from tests.integration.test_api import FakeFloor, _is_engine, order_body

db = test_api.db
floor = test_api.floor
ROOT = Path(__file__).resolve().parents[2]
BIG = 2**63 - 1


def app_for(floor: FakeFloor, db: AsyncEngine, **api: Any) -> Any:
    if api:
        floor.site = floor.site.model_copy(update={"api": ApiSettings(**api)})
    return create_app(_is_engine(floor), db, gate=Gate.without_auth())


@pytest.fixture
async def http(floor: FakeFloor, db: AsyncEngine) -> AsyncIterator[httpx.AsyncClient]:
    app = app_for(floor, db, max_body_bytes=4096, max_batch=5)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://floor") as client:
        yield client


# ---- sizes ---------------------------------------------------------------------------------------------
async def test_a_body_over_the_limit_is_a_413_whether_declared_or_streamed(http: httpx.AsyncClient,
                                                                           floor: FakeFloor) -> None:
    big = json.dumps([order_body(f"BIG-{n}", lines=[{"sku": "SKU-0001", "qty": 1}] * 40) for n in range(5)])
    assert len(big) > 4096
    declared = await http.post("/api/orders", content=big, headers={"Content-Type": "application/json"})
    assert declared.status_code == 413, declared.text
    assert declared.json() == {"detail": "request body too large: at most 4096 bytes"}
    assert declared.headers["x-content-type-options"] == "nosniff"

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: chunked
        for start in range(0, len(big), 1000):
            yield big[start:start + 1000].encode()
    streamed = await http.post("/api/orders", content=chunks(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413, streamed.text
    assert floor.received == []
    small = await http.post("/api/orders", json=order_body("SMALL-1"))
    assert small.status_code == 201, small.text


async def test_a_batch_over_max_batch_is_a_422_naming_the_limit(http: httpx.AsyncClient,
                                                                floor: FakeFloor) -> None:
    too_many = await http.post("/api/orders", json=[order_body(f"B-{n}") for n in range(6)])
    assert too_many.status_code == 422
    assert too_many.json() == {"detail": [{
        "type": "too_long", "loc": ["body", "orders"],
        "msg": "List should have at most 5 items after validation, not 6",
        "ctx": {"field_type": "List", "max_length": 5, "actual_length": 6}}]}
    assert floor.received == []
    assert (await http.post("/api/orders", json=[order_body(f"B-{n}") for n in range(5)])).status_code == 201
    schema = (await http.get("/openapi.json")).json()
    body = schema["paths"]["/api/orders"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert [b.get("maxItems") for b in body["oneOf"]] == [None, 5]
    responses = schema["paths"]["/api/orders"]["post"]["responses"]
    assert {"400", "409", "413", "422"} <= set(responses)


async def test_the_schema_documents_the_gate_and_the_open_paths(http: httpx.AsyncClient) -> None:
    paths = (await http.get("/openapi.json")).json()["paths"]
    orders = paths["/api/orders"]["get"]
    assert orders["security"] and {"401", "403"} <= set(orders["responses"])
    health = paths["/healthz"]["get"]  # open by default (api.open_paths)
    assert "security" not in health and "401" not in health["responses"]


def test_the_defaults_are_documented() -> None:
    api = ApiSettings()
    assert (api.max_body_bytes, api.max_batch, api.cors_origins) == (1 << 20, 1000, [])
    text = (ROOT / "docs" / "api.md").read_text()
    assert "1 MiB" in text and "1000 orders" in text


# ---- ids and strings -----------------------------------------------------------------------------------
@pytest.mark.parametrize("path, status", [
    (f"/api/orders/{BIG}", 404), (f"/api/orders/{BIG + 1}", 422), (f"/api/orders/{2**31}", 404),
    (f"/api/orders/{10**30}", 422), ("/api/orders/0", 422), (f"/api/orders/{BIG}/timeline", 404),
    (f"/api/orders/{BIG + 1}/timeline", 422),
])
async def test_ids_past_64_bits_are_a_422_and_never_a_500(http: httpx.AsyncClient, path: str,
                                                          status: int) -> None:
    assert (await http.get(path)).status_code == status


@pytest.mark.parametrize("action", ["cancel", "resolve"])
async def test_order_actions_take_64_bit_ids(http: httpx.AsyncClient, action: str) -> None:
    assert (await http.post(f"/api/orders/{BIG}/{action}")).status_code == 404
    assert (await http.post(f"/api/orders/{BIG + 1}/{action}")).status_code == 422


@pytest.mark.parametrize("path", ["/api/orders?external_id=a%00b", "/api/orders?carrier=%00",
                                  "/api/stock?sku=%00", "/api/timings?device_id=x%00"])
async def test_a_nul_character_is_a_422(http: httpx.AsyncClient, path: str) -> None:
    response = await http.get(path)
    assert response.status_code == 422, response.text


@pytest.mark.parametrize("body", [
    '{"external_id": "a\\u0000b", "carrier": "DHL", "lines": [{"sku": "SKU-0001", "qty": 1}]}',
    '{"external_id": "a\\ud800", "carrier": "DHL", "lines": [{"sku": "SKU-0001", "qty": 1}]}',
    '{"external_id": "a", "carrier": "DHL", "lines": [{"sku": "SKU-0001\\u0000", "qty": 1}]}',
])
async def test_a_body_string_postgresql_cannot_store_is_a_422(http: httpx.AsyncClient, body: str) -> None:
    response = await http.post("/api/orders", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 422, response.text


async def test_bad_json_is_a_documented_400(http: httpx.AsyncClient) -> None:
    response = await http.post("/api/orders", content=b"\xff\xfe{",
                               headers={"Content-Type": "application/json"})
    assert response.status_code == 400


async def test_allow_lists_every_method_of_the_path(http: httpx.AsyncClient) -> None:
    response = await http.request("OPTIONS", "/api/orders")
    assert response.status_code == 405
    assert set(response.headers["allow"].split(", ")) >= {"GET", "POST"}


# ---- headers -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/", "/static/panel.js", "/api/orders", "/healthz", "/api/orders/999999",
                                  "/api/orders/x", "/metrics", "/openapi.json", "/nowhere"])
async def test_every_answer_has_the_security_headers(http: httpx.AsyncClient, path: str) -> None:
    headers = (await http.get(path)).headers
    assert headers["content-security-policy"] == CSP
    assert "'unsafe-inline'" not in CSP and "frame-ancestors 'none'" in CSP
    assert (headers["x-content-type-options"], headers["x-frame-options"], headers["referrer-policy"]) == (
        "nosniff", "DENY", "same-origin")
    assert "access-control-allow-origin" not in headers


@pytest.mark.parametrize("path", ["/docs", "/redoc"])
async def test_the_docs_pages_run_their_inline_script_by_nonce_only(http: httpx.AsyncClient,
                                                                    path: str) -> None:
    first, second = (await http.get(path)), (await http.get(path))
    csp = first.headers["content-security-policy"]
    script_src = next(d for d in csp.split(";") if d.strip().startswith("script-src")).split()
    assert "'unsafe-inline'" not in script_src and "frame-ancestors 'none'" in csp
    [nonce] = [s.removeprefix("'nonce-").rstrip("'") for s in script_src if s.startswith("'nonce-")]
    assert nonce not in second.headers["content-security-policy"]  # one per response
    inline = re.findall(r"<script(?![^>]*\bsrc=)([^>]*)>", first.text)
    assert all(f'nonce="{nonce}"' in attrs for attrs in inline), inline
    assert first.headers["x-frame-options"] == "DENY"


def test_the_panel_has_no_inline_script_style_or_handler() -> None:
    panel = ROOT / "controller" / "panel"
    html = (panel / "templates" / "index.html").read_text()
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []
    assert re.findall(r"<style|\son[a-z]+\s*=|\sstyle\s*=|javascript:", html) == []
    for script in (panel / "static").glob("*.js"):
        text = script.read_text()
        assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|\beval\(|new Function|setAttribute\(\s*"
                             r"['\"](on|style)", text), script.name


async def test_cors_is_closed_unless_the_site_names_origins(floor: FakeFloor, db: AsyncEngine) -> None:
    preflight = {"Origin": "https://wms.example.com", "Access-Control-Request-Method": "POST",
                 "Access-Control-Request-Headers": "content-type"}
    closed = app_for(floor, db)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=closed), base_url="http://floor") as c:
        answer = await c.options("/api/orders", headers=preflight)
        assert "access-control-allow-origin" not in answer.headers
    opened = app_for(floor, db, cors_origins=["https://wms.example.com"])
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=opened), base_url="http://floor") as c:
        answer = await c.options("/api/orders", headers=preflight)
        assert answer.headers["access-control-allow-origin"] == "https://wms.example.com"
        other = await c.options("/api/orders", headers={**preflight, "Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers
        got = await c.get("/api/orders", headers={"Origin": "https://wms.example.com"})
        assert got.headers["access-control-allow-origin"] == "https://wms.example.com"
        assert got.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize("origin", ["*", "https://wms.example.com/path", "wms.example.com", "ftp://x"])
def test_a_cors_origin_must_be_an_origin(origin: str) -> None:
    with pytest.raises(ValueError):
        ApiSettings(cors_origins=[origin])


# ---- 500 -----------------------------------------------------------------------------------------------
async def test_an_unhandled_error_is_a_plain_500_with_an_id_in_the_log(
        floor: FakeFloor, db: AsyncEngine, caplog: pytest.LogCaptureFixture) -> None:
    def broken() -> dict[str, Any]:
        raise RuntimeError("secret detail /srv/floorctl/controller/engine.py line 42")
    floor.health = broken  # type: ignore[method-assign]
    app = app_for(floor, db)
    caplog.set_level(logging.ERROR)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app, raise_app_exceptions=False),
                                 base_url="http://floor") as c:
        response = await c.get("/healthz")
    assert response.status_code == 500
    body = response.json()
    assert set(body) == {"detail", "id"} and body["detail"] == "internal error"
    assert "secret" not in response.text and "Traceback" not in response.text
    assert response.headers["x-content-type-options"] == "nosniff"
    [record] = [r for r in caplog.records if body["id"] in r.getMessage()]
    assert record.exc_info is not None and "secret detail" in str(record.exc_info[1])


async def test_a_response_already_started_is_cut_off_not_replaced() -> None:
    async def streaming(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("mid-stream")
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b""}
    with pytest.raises(RuntimeError):
        await InternalErrors(streaming)({"type": "http", "method": "GET", "path": "/x"}, receive, send)
    assert [m["type"] for m in sent] == ["http.response.start"]
