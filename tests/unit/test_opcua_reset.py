"""A conveyor's or sorter's `reset`: Plc.Reset on its PLC, settled without an id of the PLC's, and
never sent again by itself (no PLC: a hand-written MethodCalls answers)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

import pytest

from adapters.opcua.devices import PlcDevice, make_device
from controller.ports import CommandRejected, DeviceUnavailable
from controller.site import Site, floor_node_maps
from tests.fakes import same_ticket


class ScriptedPlc:
    """Answers each call with the next reply; an exception class in the script is raised."""

    def __init__(self, *replies: Any) -> None:
        self.replies = list(replies)
        self.calls: list[tuple[str, str, tuple[str, ...]]] = []

    async def call(self, device_id: str, method: str, args: Sequence[str]) -> Any:
        self.calls.append((device_id, method, tuple(args)))
        reply = self.replies.pop(0)
        if isinstance(reply, type) and issubclass(reply, Exception):
            raise reply("scripted")
        return reply


def conveyor(site: Site, plc: ScriptedPlc) -> PlcDevice:
    plc_id = site.conveyors[0].plc
    maps = floor_node_maps(site, plc_id)
    device = make_device(next(m for m in maps if m.device_id == site.conveyors[0].id), plc_id, plc, Counter())
    device.link_changed(True)
    return device


async def test_reset_calls_the_plcs_reset_and_is_done_when_accepted(demo_site: Site) -> None:
    plc = ScriptedPlc("accepted")
    device = conveyor(demo_site, plc)
    ticket = await device.reset("reset-1")
    assert plc.calls == [(device.plc_id, "Reset", ())]  # on the PLC object, no command id
    assert ticket.acked.done() and ticket.done.result().ok
    assert ticket.done.result().result == {"plc": device.plc_id}
    assert same_ticket(await device.reset("reset-1"), ticket) and len(plc.calls) == 1


async def test_a_refused_reset_fails_with_the_plcs_reason_and_may_be_asked_again(demo_site: Site) -> None:
    plc = ScriptedPlc("rejected:estop", "accepted")
    device = conveyor(demo_site, plc)
    refused = await device.reset("reset-2")
    with pytest.raises(CommandRejected, match="estop"):
        refused.acked.result()
    again = await device.reset("reset-2")
    assert again is not refused and again.done.result().ok


async def test_a_reset_not_delivered_fails_and_is_not_sent_again_after_a_reconnect(demo_site: Site) -> None:
    plc = ScriptedPlc(DeviceUnavailable)
    device = conveyor(demo_site, plc)
    ticket = await device.reset("reset-3")
    assert ticket.done.result().reason == "not_delivered"
    await device.send_unfinished()
    assert len(plc.calls) == 1


async def test_a_reset_still_out_is_left_out_when_unfinished_commands_go_again(demo_site: Site) -> None:
    plc = ScriptedPlc(DeviceUnavailable, "accepted")
    device = conveyor(demo_site, plc)
    device.tickets.submit("reset-4", ("Reset", ()))  # as while its call is out
    transport = await device.command("Transport", "t-1", "TOTE-1", "PS-1")  # lost in transit
    assert not transport.acked.done()
    await device.send_unfinished()
    assert [method for _, method, _ in plc.calls] == ["Transport", "Transport"]


async def test_reset_while_the_plc_is_not_connected_raises(demo_site: Site) -> None:
    device = conveyor(demo_site, ScriptedPlc())
    device.link_changed(False)
    with pytest.raises(DeviceUnavailable):
        await device.reset("reset-5")
