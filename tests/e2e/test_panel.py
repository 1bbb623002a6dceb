"""The supervisor panel in a real browser (Debian's chromium driven by Playwright) against a real floor:
the simulators over MQTT and OPC UA, the controller, and its API served by uvicorn.

No browser is downloaded: the tests use /usr/bin/chromium (`./floorctl test` installs Debian's
`chromium` where it can) and skip, saying why, where there is none. A failing test leaves a
screenshot of the page in its tmp_path and prints where.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import shutil
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from controller.bootstrap import EmbeddedServer
from controller.domain.model import NewOrder
from controller.site import Site
from simulators.broker import free_port
from tests.e2e.conftest import RunningFloor, demo_site

pytestmark = pytest.mark.slow

playwright_api = pytest.importorskip("playwright.async_api",
                                     reason="playwright is not installed (the dev extras have it)")

CHROMIUM = os.environ.get("FLOORCTL_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
if not Path(CHROMIUM).exists():
    pytest.skip(f"no chromium at {CHROMIUM}: install Debian's `chromium` package (./floorctl test does, "
                "as root) or set FLOORCTL_CHROMIUM", allow_module_level=True)

ALARM_WITHIN_S = 2.0
SUPERVISOR, PASSWORD = "panel-sam", "panel supervisor password"


def panel_site() -> Site:
    """The demo floor (device waits are real seconds: the default 300 s outlast any test)."""
    return demo_site()


@dataclass
class Panel:
    floor: RunningFloor
    page: Any
    url: str
    errors: list[str] = field(default_factory=list)

    async def submit(self, *orders: NewOrder) -> list[int]:
        assert self.floor.controller is not None
        return [r.id for r in await self.floor.controller.engine.receive(list(orders))]

    async def open(self, path: str = "/") -> None:
        await self.page.goto(self.url + path)
        await self.page.locator("#link.live").wait_for(timeout=5000)  # the stream delivers


def order(name: str, sku: str = "SKU-0005", qty: int = 1) -> NewOrder:
    return NewOrder(f"PANEL-{name}", ((sku, qty),), "DHL")


@pytest.fixture
async def panel(floor_factory: Any, tmp_path: Path, request: pytest.FixtureRequest) -> AsyncIterator[Panel]:
    """A floor, its API on a free port, and a chromium page on the panel. Console errors and page
    errors are collected; the test fails on any. A failure saves a screenshot."""
    async with floor_factory(panel_site(), f"sqlite:///{tmp_path / 'floor.db'}") as floor:
        port = free_port()
        config = _server_config(floor, port)
        server = EmbeddedServer(config)
        serving = asyncio.create_task(server.serve(), name="panel-api")
        while not server.started:
            assert not serving.done(), "the API did not start"
            await asyncio.sleep(0.02)
        try:
            async with playwright_api.async_playwright() as pw:
                browser = await pw.chromium.launch(executable_path=CHROMIUM)
                page = await browser.new_page(viewport={"width": 1280, "height": 900})
                page.set_default_timeout(10_000)
                panel = Panel(floor, page, f"http://127.0.0.1:{port}")
                page.on("console", lambda m: panel.errors.append(m.text) if m.type == "error" else None)
                page.on("pageerror", lambda e: panel.errors.append(f"page error: {e}"))
                page.on("dialog", lambda d: asyncio.ensure_future(d.accept()))  # the panel's "are you sure?"
                await log_in(panel, floor)
                failed_before = request.session.testsfailed
                try:
                    yield panel
                    # A fixture does not see the test's exception; pytest has counted the failure
                    # by the time the fixture is torn down.
                    if request.session.testsfailed > failed_before or panel.errors:
                        await _screenshot(page, tmp_path, request.node.name)
                    assert panel.errors == [], "the browser console reported errors"
                finally:
                    await browser.close()
        finally:
            server.should_exit = True
            await serving


async def log_in(panel: Panel, floor: RunningFloor) -> None:
    """Through the login page, as a supervisor the fixture makes: the panel itself sends there."""
    assert floor.controller is not None
    await floor.controller.accounts.set_up_user(SUPERVISOR, "supervisor", PASSWORD)
    page = panel.page
    await page.goto(panel.url + "/")
    await page.wait_for_url("**/login?next=%2F")
    await page.locator("#name").fill(SUPERVISOR)
    await page.locator("#password").fill(PASSWORD)
    await page.locator("#login-submit").click()
    await page.wait_for_url(panel.url + "/")
    await page.locator("#who", has_text=f"{SUPERVISOR} (supervisor)").wait_for()


def _server_config(floor: RunningFloor, port: int) -> Any:
    import uvicorn

    assert floor.controller is not None
    # Streams end by themselves; the time-out bounds a stop that finds one open anyway.
    return uvicorn.Config(floor.controller.app(), host="127.0.0.1", port=port, log_level="warning",
                          lifespan="on", access_log=False, timeout_graceful_shutdown=2)


async def _screenshot(page: Any, tmp_path: Path, name: str) -> None:
    path = tmp_path / f"{name}-panel.png"
    with contextlib.suppress(Exception):
        await page.screenshot(path=str(path), full_page=True)
        print(f"panel screenshot: {path}")


async def until(predicate: Callable[[], Any], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.05)


async def test_board_lists_the_orders_of_a_clicked_state(panel: Panel) -> None:
    ids = await panel.submit(*(order(f"board-{i}") for i in range(6)))
    await panel.floor.wait_finished(ids, timeout=60)
    await panel.open()
    page = panel.page
    await page.locator("#states button[data-state=shipped]").click()
    await page.locator("#board-title", has_text="Orders shipped").wait_for()
    rows = page.locator("#board-list tbody tr")
    await rows.first.wait_for()
    listed = {int(x) for x in await rows.evaluate_all("rows => rows.map(r => r.dataset.order)")}
    assert listed == set(ids)
    # the tiles come with the next pushed snapshot (about once a second): wait for it
    tile = page.locator("#states button[data-state=shipped] b", has_text=re.compile(rf"^{len(ids)}$"))
    await tile.wait_for(timeout=5000)
    # A click on an order opens it; back to the attention list, which is empty.
    await rows.first.locator("a").click()
    await page.locator("#order .facts", has_text="shipped").wait_for()
    await page.locator("#board-close").click()
    await page.locator("#board-note", has_text="Nothing held or in exception").wait_for()


async def test_device_taken_out_from_the_panel_gets_no_new_commands(panel: Panel) -> None:
    await panel.open()
    page = panel.page
    card = page.locator("article.device[data-device=ptl-01]")
    await card.locator("button[data-action=take_out]").click()
    await page.locator("article.device[data-device=ptl-01][data-condition=out]").wait_for(timeout=2000)
    await card.locator(".badge", has_text="out of rotation").wait_for()
    taken_out = time.time()
    engine = panel.floor.controller.engine  # type: ignore[union-attr]
    assert not engine.queues["ptl-01"].in_rotation

    # SKU-0001 is picked only at A-01, under ptl-01: these orders wait for it, visibly.
    held = await panel.submit(*(order(f"out-{i}", sku="SKU-0001") for i in range(3)))
    others = await panel.submit(*(order(f"other-{i}") for i in range(3)))
    await panel.floor.wait_finished(others, timeout=60)
    await until(lambda: all(engine.waiting_on(i) is not None for i in held), 10, "orders waiting on ptl-01")
    await card.locator(".stat", has_text="orders waiting").locator("b", has_text="3").wait_for(timeout=3000)
    state = engine.orders[held[0]].state.value  # allocated or picking: the pick is what waits
    await page.locator(f"#states button[data-state={state}]").click()
    await page.locator("#board-list tbody tr td.waits", has_text="ptl-01").first.wait_for()

    await engine.writer.flush()
    sent = [c for c in await panel.floor.commands()
            if c.device_id == "ptl-01" and c.sent_at is not None and c.sent_at >= taken_out]
    live = [r for r in engine.queues["ptl-01"].live.values() if r["sent_at"] is not None]
    assert sent == [] and live == [], "ptl-01 got commands while out of rotation"

    await card.locator("button[data-action=put_back]").click()
    await page.locator("article.device[data-device=ptl-01][data-condition=ok]").wait_for(timeout=2000)
    await panel.floor.wait_finished(held, timeout=60)
    assert {o.state for o in await panel.floor.orders() if o.id in held} == {"shipped"}


async def test_injected_fault_is_listed_within_2_s_and_acknowledged(panel: Panel) -> None:
    await panel.open()
    page = panel.page
    injected = time.monotonic()
    panel.floor.sims.device("prn-1").inject("paper_out")
    alarm = page.locator("#alarm-list li[data-source=prn-1]")
    await alarm.first.wait_for(timeout=ALARM_WITHIN_S * 1000 + 500)
    shown_after = time.monotonic() - injected
    assert shown_after <= ALARM_WITHIN_S, f"alarm shown after {shown_after:.2f} s"
    faulted = alarm.filter(has_text="paper_out")
    await faulted.first.locator("button.ack").click()
    await faulted.first.locator("text=acknowledged").wait_for(timeout=3000)
    assert await faulted.first.locator("button.ack").count() == 0
    panel.floor.sims.device("prn-1").clear()


async def test_order_view_shows_a_command_in_flight_through_a_jam(panel: Panel) -> None:
    conveyor = panel.floor.sims.device("loop-1")
    conveyor.inject_jam("main")
    engine = panel.floor.controller.engine  # type: ignore[union-attr]
    [order_id] = await panel.submit(order("jam"))

    def conveying() -> bool:
        return any(row["task"] == "convey" for row in engine.in_hand(order_id))
    await until(conveying, 30, "the order's convey command")
    await panel.open(f"/?order={order_id}")
    page = panel.page
    label = page.locator("#order .timeline .label", has_text="convey")
    await label.first.wait_for()
    outcome = await label.first.get_attribute("data-outcome")
    assert outcome in {"queued", "sent", "acked"}, outcome
    await page.locator("#order .track .seg.running").first.wait_for()
    await page.locator("#order h3", has_text="in flight").wait_for()
    started = await label.first.locator(".badge").inner_text()
    await asyncio.sleep(2.5)  # the view refreshes itself: the running time moves on
    assert await label.first.locator(".badge").inner_text() != started
    # Where its time went, under the Gantt: so far, most of it waiting on the jammed belt.
    breakdown = page.locator("#order .breakdown")
    await breakdown.locator("h3", has_text="so far").wait_for()
    await breakdown.locator(".bd-bar .bd-seg[data-part=device_down]").wait_for()

    conveyor.clear()
    finished = page.locator("#order .timeline .label[data-outcome=ok]", has_text="convey")
    await finished.first.wait_for(timeout=20_000)
    await panel.floor.wait_finished([order_id], timeout=60)
    await page.locator("#order .facts b", has_text="shipped").wait_for(timeout=5000)
    assert await page.locator("#order .track .seg.running").count() == 0
    await breakdown.locator("h3", has_text="received → shipped").wait_for(timeout=5000)
    down = breakdown.locator(".bd-legend [data-part=device_down]")
    assert "loop-1" in await down.inner_text()  # the part, its seconds and share, the device behind it
    assert {"transit", "execution"} <= set(await breakdown.locator(".bd-legend [data-part]").evaluate_all(
        "items => items.map(i => i.dataset.part)"))
    # one bar: its parts fill it, side by side
    width = "x => x.getBoundingClientRect().width"
    widths = await breakdown.locator(".bd-seg").evaluate_all(f"segs => segs.map({width})")
    full = await breakdown.locator(".bd-bar").evaluate(width)
    assert abs(sum(widths) - full) < 2, (widths, full)


async def test_no_console_errors_and_usable_at_390_px(panel: Panel) -> None:
    """Every panel test fails on a console error (the fixture checks); this one also looks at a phone."""
    ids = await panel.submit(*(order(f"phone-{i}") for i in range(3)))
    await panel.page.set_viewport_size({"width": 390, "height": 844})
    await panel.open()
    page = panel.page
    await panel.floor.wait_finished(ids, timeout=60)
    await page.locator("#states button[data-state=shipped]").click()
    await page.locator("#board-list tbody tr").first.wait_for()
    assert await page.evaluate("document.documentElement.scrollWidth") <= 390
    assert await page.locator("#speed").inner_text() == "simulation 100× speed"
    engine = panel.floor.controller.engine  # type: ignore[union-attr]
    assert await page.locator("article.device").count() == len(engine.devices())


async def test_what_limits_the_floor_is_named_by_utilisation_and_waiting(panel: Panel) -> None:
    """A quiet floor has no bottleneck, and the card says why; every kind is listed with its load."""
    ids = await panel.submit(*(order(f"insight-{i}") for i in range(3)))
    await panel.floor.wait_finished(ids, timeout=60)
    await panel.open()
    page = panel.page
    await page.locator("#insight-verdict").get_by_text("No bottleneck:").wait_for(timeout=20000)
    assert await page.locator("#insight-kinds tbody tr").count() == 5
    assert "floor time" in await page.locator("#insight-note").inner_text()


async def test_who_did_what_on_an_order_then_logout_and_a_wrong_password(panel: Panel) -> None:
    [order_id] = await panel.submit(order("who"))
    await panel.open(f"/?order={order_id}")
    page = panel.page
    # The panel's own post(): the session cookie and the CSRF token from the login.
    outcome = await page.evaluate(
        "async (id) => { const dom = await import('/static/dom.js');"
        " try { return (await dom.post(`/api/orders/${id}/cancel`)).state; }"
        " catch (e) { return e.message; } }",
        order_id)
    assert outcome == "cancelled" or "cannot be cancelled" in outcome
    row = page.locator(".order-audit tr[data-action='order.cancel']")
    await row.wait_for(timeout=5000)
    assert SUPERVISOR in await row.inner_text()
    await page.locator("#logout").click()
    await page.wait_for_url("**/login")
    await page.goto(panel.url + "/")
    await page.wait_for_url("**/login?next=%2F")
    await page.locator("#name").fill(SUPERVISOR)
    await page.locator("#password").fill("not the password")
    await page.locator("#login-submit").click()
    await page.locator("#login-error", has_text="Wrong name or password.").wait_for()
    # the browser reports the refused login (401) on its console; that one is expected
    panel.errors[:] = [e for e in panel.errors if "401" not in e]
