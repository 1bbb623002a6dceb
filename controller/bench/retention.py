"""What the real adapters keep after a run: finished command tickets, remembered for dedupe.

The memory benchmark drives the engine with in-process fakes, which keep nothing once the driver
makes them forget. The real adapters do keep finished tickets: MqttDevice up to FINISHED_MEMORY per
device, the OPC UA TicketBook up to its capacity per device. This fills the real adapters' books with
as many finished commands per device as the run sent (each book capped as the adapter caps it),
through the adapters' own bookkeeping, and measures what that costs in memory and in the garbage
collector's full-collection pause.
"""

from __future__ import annotations

import gc
import time
from collections import Counter
from typing import Any

import psutil

from adapters.mqtt import MqttHub
from adapters.mqtt.devices import MqttDevice
from adapters.opcua import OpcUaHub
from adapters.opcua.devices import PlcDevice
from controller.ports import CommandTicket, Completion
from controller.site import Site

RESULTS = {"pick_light": {"picked": 1, "short": False}}


def _full_collection_ms() -> float:
    started = time.perf_counter()
    gc.collect()
    return round((time.perf_counter() - started) * 1000, 1)


def _finish_mqtt(device: MqttDevice, command_id: str) -> None:
    # The device's own handlers, fed what the wire would carry: the hub calls exactly these.
    device._pending[command_id] = CommandTicket(command_id, device.device_id)
    header = {"message_id": 1, "timestamp": "", "device_id": device.device_id, "version": "1.0"}
    device.on_ack({"header": header, "command_id": command_id, "status": "accepted"})
    device.on_done({"header": header, "command_id": command_id, "outcome": "done",
                    "result": RESULTS.get(device.kind.value, {})})


def _finish_opcua(device: PlcDevice, command_id: str) -> None:
    entry = device.tickets.open(command_id, "Transport", (command_id, f"T{command_id}", "PS-1"))
    entry.ticket.ack()
    device.tickets.finish(Completion(command_id, True, time.time(),
                                     result=device.completion_result(f"T{command_id}", "PS-1")))


def retained_by_adapters(site: Site, commands: Counter[str]) -> dict[str, Any]:
    """`commands`: how many commands each device got in the run. Needs a running event loop."""
    process = psutil.Process()
    before_ms = _full_collection_ms()
    before = process.memory_info().rss
    mqtt = {d.device_id: d for d in MqttHub(site).devices() if isinstance(d, MqttDevice)}
    opcua = {d.device_id: d for d in OpcUaHub(site).devices() if isinstance(d, PlcDevice)}
    for device_id, count in commands.items():
        finish = _finish_mqtt if device_id in mqtt else _finish_opcua
        device: Any = mqtt.get(device_id) or opcua.get(device_id)
        if device is None:
            continue
        for n in range(count):
            finish(device, f"r.{device_id}.{n}")
    kept = sum(len(d._finished) for d in mqtt.values()) + sum(len(d.tickets._entries) for d in opcua.values())
    after_ms = _full_collection_ms()
    grown = process.memory_info().rss - before
    return {"tickets_kept": kept, "mqtt_tickets_kept": sum(len(d._finished) for d in mqtt.values()),
            "opcua_tickets_kept": sum(len(d.tickets._entries) for d in opcua.values()),
            "rss_mb": round(grown / 2**20, 1), "bytes_per_ticket": round(grown / kept) if kept else None,
            "full_gc_ms_before": before_ms, "full_gc_ms_after": after_ms,
            "holders": "adapters/mqtt/devices.py FINISHED_MEMORY (128 per device), "
                       "adapters/opcua/tickets.py TicketBook capacity (2,048 finished per device)"}
