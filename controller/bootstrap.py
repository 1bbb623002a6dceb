"""The one composition root: settings -> adapters -> engine -> API.

Nothing is built at import time. `floorctl run`, `floorctl demo`, the tests and the benchmark all
build the controller through `Controller`, with real adapters (or fakes, for unit tests of the API).
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import uvicorn
from sqlalchemy.ext.asyncio import AsyncEngine

from controller.engine.floor import Engine
from controller.ports import DeviceHub
from controller.site import Site
from controller.store.db import create_schema, database_url, make_engine
from controller.store.writer import StoreWriter

log = logging.getLogger(__name__)


@dataclass
class Settings:
    site: Site
    data_dir: Path = Path("data")
    database_url: str | None = None  # default: FLOORCTL_DATABASE_URL, then SQLite under data_dir
    broker_url: str | None = None  # default: the site file's
    plc_endpoints: dict[str, str] = field(default_factory=dict)  # override per PLC id
    speed: float = 1.0  # the floor's time scale: controller time-outs are divided by it
    host: str = "127.0.0.1"
    port: int = 8000


def real_hubs(settings: Settings) -> list[DeviceHub]:
    from adapters.mqtt import MqttHub
    from adapters.opcua import OpcUaHub

    return [MqttHub(settings.site, broker_url=settings.broker_url),
            OpcUaHub(settings.site, endpoints=settings.plc_endpoints or None)]


class EmbeddedServer(uvicorn.Server):
    """uvicorn inside our own loop. The CLI owns Ctrl-C and SIGTERM and stops the server itself, so
    that the controller shuts down before the simulators it talks to."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def freeze_startup_heap() -> None:
    """Once a long-running process is up: collect, then freeze what is left out of the collector, so
    its full collections stop walking the imports and the asyncua address spaces (pauses of tens to
    hundreds of milliseconds otherwise). Collect first: what is frozen is never freed."""
    gc.collect()
    gc.freeze()


class Controller:
    """Database, writer, device links, engine and API, started and stopped together."""

    def __init__(self, settings: Settings, hubs: list[DeviceHub] | None = None) -> None:
        self.settings = settings
        self.url = database_url(settings.data_dir, settings.database_url)
        self.db: AsyncEngine = make_engine(self.url)
        self.writer = StoreWriter(self.url)
        self.hubs = hubs if hubs is not None else real_hubs(settings)
        self.engine = Engine(settings.site, self.hubs, self.writer, self.db, speed=settings.speed)
        self._server: Any = None
        self._serve_task: asyncio.Task[None] | None = None

    def app(self) -> Any:
        from controller.api.app import create_app

        return create_app(self.engine, self.db)

    async def start(self, *, serve_api: bool = True) -> None:
        # The store writer's thread runs Python too: hand the GIL back to the event loop sooner than
        # the default 5 ms, or a batch being prepared stalls device round trips behind it.
        sys.setswitchinterval(0.0005)
        await create_schema(self.db)
        await self.writer.start()
        await self.engine.start()
        if serve_api:
            await self._serve()

    async def _serve(self) -> None:
        config = uvicorn.Config(self.app(), host=self.settings.host, port=self.settings.port,
                                log_level="warning", lifespan="on", access_log=False)
        self._server = EmbeddedServer(config)
        self._serve_task = asyncio.create_task(self._server.serve(), name="api")
        while not self._server.started:
            if self._serve_task.done():
                self._serve_task.result()  # raises: the port is taken, most often
                raise RuntimeError(f"the API could not start on {self.settings.host}:{self.settings.port}")
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        if self._server is not None and self._serve_task is not None:
            self._server.should_exit = True
            await asyncio.gather(self._serve_task, return_exceptions=True)
        await self.engine.stop()
        await self.writer.close()
        await self.db.dispose()

    @property
    def api_url(self) -> str:
        return f"http://{self.settings.host}:{self.settings.port}"
