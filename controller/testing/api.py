"""An HTTP client of a floor's API, logged in, with what an integrator's test asks of it: release
orders, wait for a state, and check where an order went (docs/testing.md)."""

from __future__ import annotations

import itertools
import time
from collections.abc import Iterable, Mapping
from typing import Any

import httpx

from controller.site import Site

DONE = ("shipped", "exception", "cancelled")
_numbers = itertools.count(1)


class FloorApi(httpx.Client):
    """`httpx.Client` on the floor's API (`api.get("/api/orders")`) plus the helpers below. Every
    answer outside 2xx raises `httpx.HTTPStatusError` in the helpers (plain requests return it)."""

    def __init__(self, base_url: str, site: Site, *, timeout: float = 10.0) -> None:
        super().__init__(base_url=base_url, timeout=timeout)
        self.site = site

    def log_in(self, name: str, password: str) -> dict[str, Any]:
        """Log in as the panel does; every later request carries the session and its CSRF token."""
        me = self._ok(self.post("/api/auth/login", json={"name": name, "password": password}))
        if me.get("csrf"):
            self.headers["X-CSRF-Token"] = me["csrf"]
        return me

    # --- orders -------------------------------------------------------------------------------
    def submit(self, orders: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Release orders as a WMS does (POST /api/orders, a list): the API's answer, one per order."""
        answer = self._ok(self.post("/api/orders", json=[dict(order) for order in orders]))
        return list(answer)

    def submit_order(self, lines: Mapping[str, int], carrier: str, *, external_id: str | None = None,
                     priority: int = 0) -> int:
        """Release one order, e.g. `api.submit_order({"SKU-0003": 1}, "DHL")`; its id."""
        order = {"external_id": external_id or f"TEST-{time.time_ns()}-{next(_numbers)}",
                 "lines": [{"sku": sku, "qty": qty} for sku, qty in lines.items()],
                 "carrier": carrier, "priority": priority}
        return int(self.submit([order])[0]["id"])

    def order(self, order_id: int) -> dict[str, Any]:
        return dict(self._ok(self.get(f"/api/orders/{order_id}")))

    def timeline(self, order_id: int) -> list[dict[str, Any]]:
        """The order's device commands, in the order they were queued (GET .../timeline)."""
        return list(self._ok(self.get(f"/api/orders/{order_id}/timeline"))["items"])

    def wait_for_state(self, order_id: int, *states: str, timeout: float = 30.0) -> dict[str, Any]:
        """Poll the order until it is in one of `states` (default: shipped); its detail. Fails the
        test after `timeout` wall seconds, or at once when it ends in another final state."""
        wanted = states or ("shipped",)
        deadline = time.monotonic() + timeout
        while True:
            order = self.order(order_id)
            if order["state"] in wanted:
                return order
            if order["state"] in DONE:
                raise AssertionError(f"order {order_id} ended {order['state']} (reason {order['reason']!r}), "
                                     f"not {' or '.join(wanted)}")
            if time.monotonic() > deadline:
                waiting = order.get("waiting_on")
                why = f"; it waits on {waiting}" if waiting else ""
                raise AssertionError(f"order {order_id} is {order['state']} after {timeout:g} s, not "
                                     f"{' or '.join(wanted)}{why}")
            time.sleep(0.05)

    def assert_route(self, order_id: int, *, picked_at: str | Iterable[str] | None = None,
                     packed_at: str | None = None, labelled_by: str | None = None,
                     sorted_to: str | None = None) -> dict[str, Any]:
        """Check where the order went, from its detail and its device timeline, e.g.
        `api.assert_route(7, picked_at="A-03", packed_at="PS-2", sorted_to="DHL")`.

        `picked_at`: its lines' locations, each lit and confirmed on that location's pick light;
        `packed_at`: the pack station that packed it; `labelled_by`: the printer of its label;
        `sorted_to`: a carrier (its lane) or a lane id, the lane the sorter diverted it to.
        Returns the order's detail."""
        order = self.order(order_id)
        done = [c for c in self.timeline(order_id) if c["outcome"] == "ok"]
        problems: list[str] = []

        def ran(task: str, device: str) -> bool:
            return any(c["task"] == task and c["device_id"] == device for c in done)

        if picked_at is not None:
            wanted = {picked_at} if isinstance(picked_at, str) else set(picked_at)
            where = {line["location"] for line in order["lines"]}
            if where != wanted:
                problems.append(f"picked at {', '.join(sorted(map(str, where)))}, "
                                f"not {', '.join(sorted(wanted))}")
            lights = {loc.id: loc.pick_light for loc in self.site.locations}
            for location in sorted(wanted & where):
                if not ran("pick", lights[location]):
                    problems.append(f"no completed pick on {lights[location]} (location {location})")
        for name, task, device, column in (("packed at", "pack", packed_at, "pack_station"),
                                           ("labelled by", "label", labelled_by, "printer")):
            if device is None:
                continue
            if order[column] != device:
                problems.append(f"{name} {order[column]}, not {device}")
            elif not ran(task, device):
                problems.append(f"no completed {task} command on {device}")
        if sorted_to is not None:
            lane = next((c.lane for c in self.site.carriers if c.id == sorted_to), sorted_to)
            if order["lane"] != lane:
                problems.append(f"sorted to {order['lane']}, not {lane}"
                                + (f" ({sorted_to}'s lane)" if lane != sorted_to else ""))
            elif not any(c["task"] == "divert" for c in done):
                problems.append("no completed divert command")
        if problems:
            raise AssertionError(f"order {order_id} ({order['state']}): " + "; ".join(problems))
        return order

    @staticmethod
    def _ok(response: httpx.Response) -> Any:
        response.raise_for_status()
        return response.json()
