"""DeviceQueue against hand-written fakes: priority, capacity, time-outs with the same id, rejections,
waiting on an offline device, printers handing work back. No broker, no server, no database."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest

from controller.engine.dispatch import DeviceFailed, DeviceQueue, Job
from controller.ports import CommandRejected, CommandTicket, Completion, DeviceStatus
from tests.fakes import FakeConveyor, FakeDevice, FakePickLight, FakePrinter


class Bench:
    """The little a fake device needs from its hub."""

    delay_s = 0.002

    def __init__(self) -> None:
        self.events: list[Any] = []

    def emit(self, event: Any) -> None:
        self.events.append(event)


def queue_for(device: FakeDevice, *, retries: int = 1, ack_timeout_s: float = 0.05) -> tuple[DeviceQueue,
                                                                                             list[dict]]:
    rows: list[dict[str, Any]] = []
    return DeviceQueue(device, ack_timeout_s=ack_timeout_s, retries=retries, timing=rows.append), rows


def job(device: FakeDevice, command_id: str, priority: int = 0, timeout_s: float = 1.0) -> Job:
    async def issue() -> CommandTicket:
        return await device._command(command_id, "show", qty=1)
    return Job((priority,), command_id, "show", "pick", 1, issue, timeout_s)


async def test_one_at_a_time_highest_priority_first() -> None:
    light = FakePickLight("pl-1", Bench())  # type: ignore[arg-type]
    queue, rows = queue_for(light)
    order: list[str] = []

    async def run(command_id: str, priority: int) -> None:
        await queue.run(job(light, command_id, priority))
        order.append(command_id)

    first = asyncio.create_task(run("a", 5))
    await asyncio.sleep(0)
    assert queue.in_flight == 1
    rest = [asyncio.create_task(run(cid, prio)) for cid, prio in (("low", 3), ("high", -1), ("mid", 1))]
    await asyncio.gather(first, *rest)
    assert order == ["a", "high", "mid", "low"]  # lower sort key first: the engine uses -priority
    assert [r["outcome"] for r in rows] == ["ok"] * 4
    for r in rows:
        assert r["queued_at"] <= r["sent_at"] <= r["acked_at"] <= r["completed_at"]


async def test_a_silent_device_is_retried_with_the_same_id_then_fails() -> None:
    light = FakePickLight("pl-1", Bench())  # type: ignore[arg-type]
    light.silent = True
    queue, rows = queue_for(light, retries=2)
    with pytest.raises(DeviceFailed) as failed:
        await queue.run(job(light, "o1.pick.1.a0"))
    assert failed.value.outcome == "timed_out"
    assert [cid for cid, _, _ in light.received] == ["o1.pick.1.a0"] * 3  # the first send and two retries
    assert rows[-1]["retries"] == 2 and rows[-1]["outcome"] == "timed_out"


async def test_a_rejection_fails_at_once_with_the_reason() -> None:
    light = FakePickLight("pl-1", Bench())  # type: ignore[arg-type]

    async def issue() -> CommandTicket:
        ticket = CommandTicket("c1", light.device_id)
        ticket.mark_sent()
        ticket.acked.set_exception(CommandRejected(light.device_id, "c1", "lamp_broken"))
        ticket.finish(Completion("c1", False, 0.0, reason="lamp_broken"))
        return ticket

    queue, rows = queue_for(light)
    with pytest.raises(DeviceFailed, match="rejected: lamp_broken"):
        await queue.run(Job((0,), "c1", "show", "pick", 1, issue, 1.0))
    assert rows[-1]["outcome"] == "failed"


async def test_an_offline_device_holds_its_work_without_spending_retries() -> None:
    light = FakePickLight("pl-1", Bench())  # type: ignore[arg-type]
    light.status = DeviceStatus("pl-1", light.kind, online=False)
    queue, rows = queue_for(light, retries=0, ack_timeout_s=0.01)
    queue.update_status(light.status)
    task = asyncio.create_task(queue.run(job(light, "c1")))
    await asyncio.sleep(0.1)
    assert not task.done() and light.received == []
    light.status = DeviceStatus("pl-1", light.kind, online=True, state="idle")
    queue.update_status(light.status)
    completion = await asyncio.wait_for(task, 1.0)
    assert completion.ok and rows[-1]["retries"] == 0


async def test_a_faulted_printer_hands_its_queued_work_back() -> None:
    printer = FakePrinter("prn-1", Bench())  # type: ignore[arg-type]
    printer.silent = True  # the first label occupies both places while the fault comes
    queue, rows = queue_for(printer, ack_timeout_s=5.0)
    assert queue.reroutes
    running = [asyncio.create_task(queue.run(job(printer, f"l{i}"))) for i in range(3)]
    await asyncio.sleep(0.01)
    assert queue.in_flight == 2 and queue.queued == 1
    printer.status = DeviceStatus("prn-1", printer.kind, online=True, state="faulted", fault="paper_out")
    queue.update_status(printer.status)
    with pytest.raises(DeviceFailed, match="rerouted: faulted: paper_out"):
        await running[2]
    assert not queue.usable
    with pytest.raises(DeviceFailed, match="rerouted"):
        await queue.run(job(printer, "l9"))  # a new label goes elsewhere at once
    for task in running[:2]:
        task.cancel()
    await asyncio.gather(*running[:2], return_exceptions=True)
    assert {r["outcome"] for r in rows} >= {"failed", "cancelled"}


# ---- the fault policy ----------------------------------------------------------------------------
def set_status(device: FakeDevice, queue: DeviceQueue, **kwargs: Any) -> None:
    device.status = DeviceStatus(device.device_id, device.kind, **{"online": True, "state": "idle", **kwargs})
    queue.update_status(device.status)


async def test_a_faulted_pick_light_gets_no_new_work_and_resumes_when_cleared() -> None:
    light = FakePickLight("pl-1", Bench())  # type: ignore[arg-type]
    queue, rows = queue_for(light)
    set_status(light, queue, fault="lamp_broken", state="faulted")
    task = asyncio.create_task(queue.run(job(light, "c1")))
    await asyncio.sleep(0.05)
    assert light.received == [] and not task.done()
    waiting = queue.waiting_on()
    assert waiting is not None and waiting.device_id == "pl-1" and waiting.reason == "faulted: lamp_broken"
    assert queue.order_ids() == {1} and queue.live["c1"]["outcome"] == "queued"
    set_status(light, queue)
    assert (await asyncio.wait_for(task, 1.0)).ok
    assert queue.waiting_on() is None and queue.live == {}
    assert rows[-1]["outcome"] == "ok"


async def test_a_pick_light_hands_back_what_waits_when_it_faults() -> None:
    light = FakePickLight("pl-1", Bench())  # type: ignore[arg-type]
    light.silent = True
    queue, _ = queue_for(light, ack_timeout_s=5.0)
    first = asyncio.create_task(queue.run(job(light, "c1")))
    second = asyncio.create_task(queue.run(job(light, "c2")))
    await asyncio.sleep(0.01)
    set_status(light, queue, fault="lamp_broken", state="faulted")
    with pytest.raises(DeviceFailed, match="rerouted"):
        await second  # queued: its order may find the SKU elsewhere
    assert not first.done()  # in hand: it waits with the device
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)


async def test_paused_and_out_of_rotation_devices_drain_and_take_nothing_new() -> None:
    for control, undo in (("pause", "resume"), ("take_out_of_rotation", "put_back")):
        light = FakePickLight("pl-1", Bench())  # type: ignore[arg-type]
        queue, _ = queue_for(light)
        if control == "pause":
            queue.pause()
        else:
            queue.take_out_of_rotation("taken out by ana", by_controller=False)
        assert not queue.usable and queue.availability.reason is not None
        task = asyncio.create_task(queue.run(job(light, "c1")))
        await asyncio.sleep(0.05)
        assert light.received == []
        set_status(light, queue)  # a ready report does not undo a person's control
        await asyncio.sleep(0.02)
        assert light.received == []
        getattr(queue, undo)()
        assert (await asyncio.wait_for(task, 1.0)).ok


async def test_work_waiting_past_the_limit_fails_naming_the_device() -> None:
    light = FakePickLight("pl-1", Bench())  # type: ignore[arg-type]
    rows: list[dict[str, Any]] = []
    queue = DeviceQueue(light, ack_timeout_s=0.05, retries=1, timing=rows.append, wait_limit_s=0.2)
    set_status(light, queue, online=False)
    with pytest.raises(DeviceFailed, match=r"waited 0 s on pl-1 \(offline\)"):
        await asyncio.wait_for(queue.run(job(light, "c1")), 2.0)
    assert rows[-1]["outcome"] == "failed" and light.received == []


async def test_each_queued_job_gets_its_own_wait_limit_and_the_work_is_kept_when_the_device_is_back() -> None:
    light = FakePickLight("pl-1", Bench())  # type: ignore[arg-type]
    rows: list[dict[str, Any]] = []
    queue = DeviceQueue(light, ack_timeout_s=0.05, retries=1, timing=rows.append, wait_limit_s=0.3)
    queue.pause()
    early = asyncio.create_task(queue.run(job(light, "c1")))
    await asyncio.sleep(0.2)
    late = asyncio.create_task(queue.run(job(light, "c2")))
    with pytest.raises(DeviceFailed, match=r"waited 0 s on pl-1 \(paused\)"):
        await asyncio.wait_for(early, 2.0)
    assert not late.done()  # queued 0.2 s later: its own limit is not over yet
    with pytest.raises(DeviceFailed, match="on pl-1"):
        await asyncio.wait_for(late, 2.0)
    kept = asyncio.create_task(queue.run(job(light, "c3")))
    await asyncio.sleep(0.1)
    queue.resume()  # back within the limit: the work goes out
    assert (await asyncio.wait_for(kept, 2.0)).ok
    await asyncio.sleep(0.4)  # past where its limit would have been: nothing fails late
    assert [r["outcome"] for r in rows] == ["failed", "failed", "ok"]


async def test_a_refusal_for_the_device_state_is_sent_again_with_the_same_id() -> None:
    light = FakePickLight("pl-1", Bench())  # type: ignore[arg-type]
    refused = [True]

    async def issue() -> CommandTicket:
        ticket = CommandTicket("c1", light.device_id)
        ticket.mark_sent()
        if refused[0]:
            refused[0] = False
            set_status(light, queue, fault="estop", state="faulted")
            ticket.acked.set_exception(CommandRejected(light.device_id, "c1", "estop"))
            ticket.finish(Completion("c1", False, time.time(), reason="estop"))
        else:
            ticket.finish(Completion("c1", True, time.time()))
        return ticket

    queue, rows = queue_for(light)
    task = asyncio.create_task(queue.run(Job((0,), "c1", "show", "pick", 1, issue, 1.0)))
    await asyncio.sleep(0.1)
    assert not task.done()  # held while the e-stop lasts
    set_status(light, queue)
    assert (await asyncio.wait_for(task, 2.0)).ok
    assert rows[-1]["outcome"] == "ok"


async def test_a_command_error_is_not_sent_again() -> None:
    light = FakePickLight("pl-1", Bench())  # type: ignore[arg-type]
    sends = []

    async def issue() -> CommandTicket:
        sends.append(1)
        ticket = CommandTicket("c1", light.device_id)
        ticket.acked.set_exception(CommandRejected(light.device_id, "c1", "bad_params: qty"))
        ticket.finish(Completion("c1", False, time.time(), reason="bad_params: qty"))
        return ticket

    queue, _ = queue_for(light)
    with pytest.raises(DeviceFailed, match="rejected: bad_params"):
        await queue.run(Job((0,), "c1", "show", "pick", 1, issue, 1.0))
    assert len(sends) == 1


async def test_a_timed_out_pick_is_cleared_before_the_light_shows_anything_else() -> None:
    light = FakePickLight("pl-1", Bench())  # type: ignore[arg-type]
    light.silent = True
    queue, _ = queue_for(light, retries=0, ack_timeout_s=0.05)
    order: list[str] = []

    async def clear() -> CommandTicket:
        order.append("clear")
        light.silent = False  # it answers again once cleared, whenever the next pick goes out
        ticket = CommandTicket("c1.clear", light.device_id)
        ticket.finish(Completion("c1.clear", True, time.time()))
        return ticket

    stuck = Job((0,), "c1", "show", "pick", 1, lambda: light._command("c1", "show", qty=1), 0.05,
                after_timeout=clear)
    first = asyncio.create_task(queue.run(stuck))
    await asyncio.sleep(0)
    light.silent = False

    async def next_pick() -> None:
        await queue.run(job(light, "c2"))
        order.append("c2")

    second = asyncio.create_task(next_pick())
    light.silent = True  # the first stays unanswered
    with pytest.raises(DeviceFailed, match="no acknowledgement"):
        await first
    light.silent = False
    await asyncio.wait_for(second, 2.0)
    assert order == ["clear", "c2"]


async def test_a_divert_goes_through_a_jam() -> None:
    sorter = FakePickLight("sorter-1", Bench())  # type: ignore[arg-type]  # any device: the queue's rule
    queue, _ = queue_for(sorter)
    set_status(sorter, queue, fault="jam:loop", state="faulted")
    divert = job(sorter, "d1")
    divert.while_faulted = True
    assert (await asyncio.wait_for(queue.run(divert), 1.0)).ok


# ---- time waited on a device that takes no work (the order's time breakdown reads it) ------------------
async def test_a_command_queued_at_a_faulted_device_counts_the_wait_before_it_was_sent() -> None:
    light = FakePickLight("pl-1", Bench())  # type: ignore[arg-type]
    queue, rows = queue_for(light)
    set_status(light, queue, fault="lamp_broken", state="faulted")
    task = asyncio.create_task(queue.run(job(light, "c1")))
    await asyncio.sleep(0.1)
    so_far = queue.row_now(queue.live["c1"])  # what the live breakdown reads: the wait up to now
    assert 0.09 <= so_far["down_queued_s"] < 0.5 and queue.live["c1"]["down_queued_s"] == 0.0
    set_status(light, queue)
    assert (await asyncio.wait_for(task, 1.0)).ok
    row = rows[-1]
    assert 0.09 <= row["down_queued_s"] <= row["sent_at"] - row["queued_at"]
    assert row["down_in_hand_s"] == 0.0
    assert row["completed_at"] <= row["ended_at"]


async def test_a_command_in_hand_counts_the_wait_while_its_device_is_faulted_and_holds_it() -> None:
    conveyor = FakeConveyor("loop-1", Bench())  # type: ignore[arg-type]
    conveyor.silent = True  # sent, not answered: in the conveyor's hands when the jam comes
    queue, rows = queue_for(conveyor, ack_timeout_s=0.05)

    async def issue() -> CommandTicket:
        return await conveyor.transport("t1", "T1", "pack-1")
    task = asyncio.create_task(queue.run(Job((0,), "t1", "transport", "convey", 1, issue, 1.0)))
    await asyncio.sleep(0.01)
    set_status(conveyor, queue, fault="jam:main", state="faulted")
    await asyncio.sleep(0.15)
    conveyor.silent = False
    set_status(conveyor, queue)
    assert (await asyncio.wait_for(task, 1.0)).ok
    row = rows[-1]
    assert row["down_queued_s"] == 0.0
    assert 0.14 <= row["down_in_hand_s"] <= row["completed_at"] - row["sent_at"]


async def test_a_paused_device_finishes_what_it_holds_without_a_wait_and_counts_what_queued_behind() -> None:
    bench = Bench()
    bench.delay_s = 0.1
    light = FakePickLight("pl-1", bench)  # type: ignore[arg-type]
    queue, rows = queue_for(light)
    first = asyncio.create_task(queue.run(job(light, "c1")))
    await asyncio.sleep(0.01)
    queue.pause()
    second = asyncio.create_task(queue.run(job(light, "c2")))
    await asyncio.wait_for(first, 1.0)
    await asyncio.sleep(0.05)
    queue.resume()
    await asyncio.wait_for(second, 1.0)
    by_id = {r["command_id"]: r for r in rows}
    assert by_id["c1"]["down_queued_s"] == by_id["c1"]["down_in_hand_s"] == 0.0  # drained: it worked on
    assert 0.1 <= by_id["c2"]["down_queued_s"] < 0.5


async def test_a_divert_through_a_jam_does_not_wait_and_a_handed_back_pick_ends_when_handed_back() -> None:
    sorter = FakePickLight("sorter-1", Bench())  # type: ignore[arg-type]
    queue, rows = queue_for(sorter)
    set_status(sorter, queue, fault="jam:loop", state="faulted")
    divert = job(sorter, "d1")
    divert.while_faulted = True
    await asyncio.wait_for(queue.run(divert), 1.0)
    assert rows[-1]["down_queued_s"] == rows[-1]["down_in_hand_s"] == 0.0

    light = FakePickLight("pl-1", Bench())  # type: ignore[arg-type]
    light.silent = True
    queue, rows = queue_for(light, ack_timeout_s=5.0)
    first = asyncio.create_task(queue.run(job(light, "c1")))
    second = asyncio.create_task(queue.run(job(light, "c2")))
    await asyncio.sleep(0.01)
    set_status(light, queue, fault="lamp_broken", state="faulted")
    with pytest.raises(DeviceFailed, match="rerouted"):
        await second
    handed_back = rows[-1]
    assert handed_back["command_id"] == "c2" and handed_back["sent_at"] is None
    assert handed_back["ended_at"] - handed_back["queued_at"] >= 0.009
    first.cancel()
    await asyncio.gather(first, return_exceptions=True)
