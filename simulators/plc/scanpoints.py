"""The scanners of one simulated PLC as OPC UA objects: what each read last, and how often it read.

Every read is already a ScanEventType event; these variables are the view a person or a panel gets
by browsing the PLC. Writing five variables per read would cost a PLC at 2,000 reads/s more than
the events do, so a read only updates the scan point's tally in memory, and tallies that changed
are written at most every FLUSH_S: the first read after a quiet spell shows at once, a burst shows
its latest read and its counts. The tallies are the PLC's memory: they survive a restart of its server.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from asyncua import Node, Server, ua

from controller.contract.opcua import SCAN_POINT_SIGNALS, NodeMap
from simulators.plc.reports import Scanned
from simulators.plc.uaserver import resolve, variant_type

FLUSH_S = 0.05
NEVER = datetime(1601, 1, 1, tzinfo=UTC)  # OPC UA's null DateTime: no read yet


class FlushDue:
    """Put in the PLC's outbox when changed tallies are due to be written (by its one writer)."""


FLUSH_DUE = FlushDue()


@dataclass(slots=True)
class ScanTally:
    last_barcode: str = ""  # "" after a no-read, as in the scan event
    last_scan_id: str = ""
    last_read_at: float | None = None
    read_count: int = 0  # every read, the no-reads included
    no_read_count: int = 0

    def read(self, scanned: Scanned) -> None:
        self.last_barcode = scanned.barcode or ""
        self.last_scan_id = scanned.scan_id
        self.last_read_at = scanned.at
        self.read_count += 1
        self.no_read_count += scanned.barcode is None

    def values(self) -> dict[str, object]:
        """By signal name, for the variables of SCAN_POINT_SIGNALS."""
        return {
            "LastBarcode": self.last_barcode,
            "LastScanId": self.last_scan_id,
            "LastReadAt": NEVER if self.last_read_at is None else datetime.fromtimestamp(self.last_read_at,
                                                                                         UTC),
            "ReadCount": self.read_count,
            "NoReadCount": self.no_read_count,
        }


_VARIABLES = [s for s in SCAN_POINT_SIGNALS.values() if s.datatype is not None]


class ScanPointBoard:
    def __init__(self, maps: Sequence[NodeMap]) -> None:
        self.tallies = {sp: ScanTally() for m in maps for sp in m.scan_points}
        self._maps = [m for m in maps if m.scan_points]
        self._nodes: dict[str, dict[str, ua.NodeId]] = {}  # scan point -> signal -> node, while served
        self._changed: set[str] = set()
        self._wake: Callable[[], None] | None = None
        self._timer: asyncio.TimerHandle | None = None
        self._flushed_at = 0.0

    def record(self, scanned: Scanned) -> None:
        """A read: counted whether or not the server is up (a PLC counts with its cable cut)."""
        self.tallies[scanned.scan_point].read(scanned)
        self._changed.add(scanned.scan_point)
        if self._wake is not None and self._timer is None:
            delay = max(0.0, self._flushed_at + FLUSH_S - time.monotonic())
            self._timer = asyncio.get_running_loop().call_later(delay, self._due)

    def _due(self) -> None:
        self._timer = None
        if self._wake is not None:
            self._wake()

    async def build(self, server: Server, objects: Mapping[str, Node], namespaces: list[str]) -> None:
        """An object per scan point under its device's object, its variables holding the tally."""
        self._nodes.clear()
        self._changed.clear()
        for node_map in self._maps:
            for scan_point, nodes in node_map.scan_points.items():
                nodeid = resolve(nodes["ScanPoint"], namespaces)
                obj = await objects[node_map.device_id].add_object(
                    nodeid, ua.QualifiedName(scan_point, nodeid.NamespaceIndex))
                values = self.tallies[scan_point].values()
                self._nodes[scan_point] = {}
                for signal in _VARIABLES:
                    nodeid = resolve(nodes[signal.name], namespaces)
                    variable = await obj.add_variable(nodeid,
                                                      ua.QualifiedName(signal.name, nodeid.NamespaceIndex),
                                                      ua.Variant(values[signal.name], variant_type(signal)))
                    self._nodes[scan_point][signal.name] = variable.nodeid

    def listen(self, wake: Callable[[], None] | None) -> None:
        """`wake` is called when changed tallies are due to be written; None while the server is down."""
        self._wake = wake
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if wake is not None and self._changed:
            wake()

    async def flush(self, server: Server) -> None:
        self._flushed_at = time.monotonic()
        changed, self._changed = self._changed, set()
        for scan_point in changed:
            values = self.tallies[scan_point].values()
            for signal in _VARIABLES:
                variant = ua.Variant(values[signal.name], variant_type(signal))
                await server.write_attribute_value(self._nodes[scan_point][signal.name],
                                                   ua.DataValue(variant))
