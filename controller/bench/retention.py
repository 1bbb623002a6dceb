"""What the real adapters keep after a run: finished command tickets, remembered for dedupe.

The memory benchmark drives the engine with in-process fakes, which keep nothing once the driver
makes them forget. The real adapters do keep finished tickets, each device in its TicketBook
(adapters/tickets.py) up to the capacity its adapter gives (MQTT 128, OPC UA 2,048 per device).
This fills the real adapters' books with as many finished commands per device as the run sent (each
book capped as the adapter caps it),
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
from controller.ports import Completion
from controller.site import Site

# What each kind was sent and answered, as the wire would carry it (the adapter checks results).
PACK = {"order_id": "1", "tote_id": "T1", "items": 1}
COMMANDS: dict[str, tuple[str, dict[str, Any], dict[str, Any]]] = {
    "pick_light": ("show", {"location": "A-01", "qty": 1, "colour": "green"}, {"picked": 1, "short": False}),
    "printer": ("print", {"zpl": "^XA^XZ"}, {"labels_remaining": 100}),
    "pack_station": ("pack", PACK, dict(PACK)),
}


def _full_collection_ms() -> float:
    started = time.perf_counter()
    gc.collect()
    return round((time.perf_counter() - started) * 1000, 1)


def _finish_mqtt(device: MqttDevice, command_id: str) -> None:
    # The device's own handlers, fed what the wire would carry: the hub calls exactly these.
    action, params, result = COMMANDS[device.kind.value]
    device.tickets.submit(command_id, (action, params))
    header = {"message_id": 1, "timestamp": "", "device_id": device.device_id, "version": "1.0"}
    device.on_ack({"header": header, "command_id": command_id, "status": "accepted"})
    done = {"header": header, "command_id": command_id, "outcome": "done", "result": result}
    problem = device.on_done(done)
    if problem is not None:
        raise RuntimeError(f"{device.device_id}: the adapter refused the bench's own done: {problem}")


def _finish_opcua(device: PlcDevice, command_id: str) -> None:
    device.tickets.submit(command_id, ("Transport", (command_id, f"T{command_id}", "PS-1")))
    device.tickets.accept(command_id)
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
    kept = sum(len(d.tickets) for d in mqtt.values()) + sum(len(d.tickets) for d in opcua.values())
    after_ms = _full_collection_ms()
    grown = process.memory_info().rss - before
    return {"tickets_kept": kept, "mqtt_tickets_kept": sum(len(d.tickets) for d in mqtt.values()),
            "opcua_tickets_kept": sum(len(d.tickets) for d in opcua.values()),
            "rss_mb": round(grown / 2**20, 1), "bytes_per_ticket": round(grown / kept) if kept else None,
            "full_gc_ms_before": before_ms, "full_gc_ms_after": after_ms,
            "holders": "adapters/tickets.py TicketBook: "
                       "adapters/mqtt/devices.py FINISHED_MEMORY (128 per device), "
                       "adapters/opcua/devices.py FINISHED_MEMORY (2,048 per device)"}
