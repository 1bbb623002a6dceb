"""The wire contract between floorctl and its devices, as code: what the controller, the adapters and
the simulators must agree on to talk at all. `kinds` names the device kinds; `mqtt` is the topic
layout, message headers and JSON codec of the MQTT devices; `opcua` is the namespace, event types,
Machinery value sets and the node-id grammar of the PLCs; `reasons` are the codes a device gives when
it refuses or fails a command. Everything here is plain data and pure functions (no I/O, no asyncio,
no protocol library), and nothing here imports the rest of floorctl, so every layer may depend on it.
docs/devices.md is its text: a change to one is a change to the other.
"""
