"""A simulated device's broker link with a cable that can be pulled: fault injection, not product code."""

from __future__ import annotations

import asyncio
from typing import Any

from adapters.mqtt.link import MqttLink


class PluggableLink(MqttLink):
    """An MqttLink whose connection can be cut as a pulled cable would (no DISCONNECT: the broker
    publishes the last-will) and stays down until `restore()`."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._plugged = asyncio.Event()
        self._plugged.set()

    def cut(self) -> None:
        self._plugged.clear()
        self._abort()

    def restore(self) -> None:
        self._plugged.set()

    async def _open(self) -> None:
        await self._plugged.wait()  # no attempt while the cable is out
        await super()._open()
        if not self._plugged.is_set():
            self._abort()  # cut while connecting
