"""The API's own documentation pages, /docs (Swagger UI) and /redoc, work on a site network with no
internet: every script and style sheet comes from the app, and the Swagger UI is a 5.x that reads the
OpenAPI 3.1 FastAPI emits (4.x shows "Unable to render this definition"). The browser test renders both
pages in Debian's headless Chromium through Playwright, and is skipped where either is missing."""

from __future__ import annotations

import asyncio
import re
import shutil
import socket
import threading
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import httpx
import pytest
import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from controller.api import EngineLike, Gate, create_app
from controller.engine.stats import FloorStats

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
LOCAL_REF = re.compile(r'(?:src|href)="(/[^"]*)"')
ANY_REF = re.compile(r'(?:src|href)="([^"]*)"')


def docs_app() -> Any:
    """The real app around an engine that only has what the docs pages touch (nothing)."""
    engine = cast(EngineLike, SimpleNamespace(stats=FloorStats()))
    db: AsyncEngine = create_async_engine("sqlite+aiosqlite://")  # never connected: no page reads it
    return create_app(engine, db, gate=Gate.without_auth())


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=docs_app()), base_url="http://floor") as c:
        yield c


async def test_docs_and_redoc_load_only_local_files(client: httpx.AsyncClient) -> None:
    for page_url, script in (("/docs", "swagger-ui-bundle.js"), ("/redoc", "redoc.standalone.js")):
        page = await client.get(page_url)
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        refs = ANY_REF.findall(page.text)
        local = all(ref.startswith("/") and not ref.startswith("//") for ref in refs)
        assert refs and local, (page_url, refs)
        assert "fonts.googleapis" not in page.text and "cdn" not in page.text.lower(), page_url
        assert any(ref.endswith(script) for ref in refs), (page_url, refs)
        for ref in LOCAL_REF.findall(page.text):
            asset = await client.get(ref)
            assert asset.status_code == 200 and len(asset.content) > 1000, ref


async def test_swagger_ui_is_5x_and_redoc_2x(client: httpx.AsyncClient) -> None:
    bundle = (await client.get("/static/apidocs/swagger-ui-bundle.js")).text
    version = re.search(r'PACKAGE_VERSION:"(\d+)\.(\d+)\.(\d+)"', bundle)
    assert version is not None and int(version.group(1)) >= 5, version  # 5.x reads OpenAPI 3.1
    redoc = (await client.get("/static/apidocs/redoc.standalone.js")).text
    assert re.search(r'ReDoc Version: ","2\.\d+\.\d+"', redoc), "ReDoc 2.x (reads OpenAPI 3.1)"
    assert (await client.get("/openapi.json")).json()["openapi"].startswith("3.1")


# ---- in a real browser ------------------------------------------------------------------------------
@pytest.fixture
def live_url() -> Iterator[str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(docs_app(), host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        threading.Event().wait(0.025)
    assert server.started, "uvicorn did not start"
    yield f"http://127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


async def test_docs_render_in_a_browser_with_no_outside_requests(live_url: str, tmp_path: Path) -> None:
    playwright_api = pytest.importorskip("playwright.async_api")
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    outside: list[str] = []
    errors: list[str] = []
    async with playwright_api.async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = await browser.new_page()
            page.on("request", lambda r: outside.append(f"{r.resource_type} {r.url}")
                    if not r.url.startswith((live_url, f"blob:{live_url}")) else None)
            page.on("pageerror", lambda e: errors.append(str(e)))

            await page.goto(f"{live_url}/docs")
            try:
                await page.wait_for_selector(".swagger-ui .info .title", timeout=15_000)
                await page.wait_for_selector(".opblock-tag", timeout=15_000)
            except Exception:
                await page.screenshot(path=str(tmp_path / "docs.png"))
                raise
            body = await page.inner_text("body")
            assert "Unable to render this definition" not in body
            assert "floorctl" in body and "/api/orders" in body

            await page.goto(f"{live_url}/redoc")
            try:
                await page.wait_for_selector("[role=search], .api-content h1", timeout=15_000)
            except Exception:
                await page.screenshot(path=str(tmp_path / "redoc.png"))
                raise
            await asyncio.sleep(0.2)
            body = await page.inner_text("body")
            assert "Something went wrong" not in body
            assert "/api/orders" in body
        finally:
            await browser.close()
    # ReDoc's sidebar credit shows Redocly's logo from their site, an <img> that hides itself when it
    # cannot load: the one outside request allowed. No script, style sheet, font or data from outside.
    assert outside in ([], ["image https://cdn.redoc.ly/redoc/logo-mini.svg"]), outside
    assert errors == [], errors
