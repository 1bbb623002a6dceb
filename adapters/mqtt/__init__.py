"""MQTT devices (pick lights, printers, pack stations) for the controller: paho-mqtt on the asyncio loop."""

from adapters.mqtt.devices import CommandRejected, MqttDevice, MqttPackStation, MqttPickLight, MqttPrinter
from adapters.mqtt.hub import MqttHub
from adapters.mqtt.link import MqttLink

__all__ = ["CommandRejected", "MqttDevice", "MqttHub", "MqttLink", "MqttPackStation", "MqttPickLight",
           "MqttPrinter"]
