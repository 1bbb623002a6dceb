"""Simulated MQTT devices: pick-to-light units, label printers (ZPL) and pack stations."""

from simulators.mqtt.device import SimulatedDevice
from simulators.mqtt.fleet import MqttFloor
from simulators.mqtt.pack_station import SimPackStation
from simulators.mqtt.pick_light import SimPickLight
from simulators.mqtt.printer import SimPrinter

__all__ = ["MqttFloor", "SimPackStation", "SimPickLight", "SimPrinter", "SimulatedDevice"]
