"""The PLC simulator: the simulated conveyors and sorters of one PLC behind a real asyncua server.

The address space is built from the same node maps the adapter reads (controller/site.py), so a
site file with other node ids gives a server with other node ids. The wire contract is written
down in docs/devices.md (OPC UA devices).
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections import Counter
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any, Self
from urllib.parse import urlsplit, urlunsplit

from asyncua import Node, Server, ua
from asyncua.server.event_generator import EventGenerator

from controller.contract import opcua
from controller.contract.opcua import (
    ACCEPTED,
    CONTRACT_NAMESPACE,
    CONTRACT_VERSION,
    EventType,
    NodeMap,
    Role,
    namespace_indexes,
    rejected,
)
from controller.contract.reasons import Reason
from controller.security.opcua_trust import TrustList, certificate_uri
from controller.site import Site, floor_node_maps
from simulators.clock import SimClock
from simulators.plc.conveyor import SimConveyor
from simulators.plc.machine import Machine
from simulators.plc.reports import Completed, DivertReport, Report, Scanned, StatusChanged
from simulators.plc.scanpoints import FLUSH_DUE, FlushDue, ScanPointBoard, ScanTally
from simulators.plc.sorter import SimSorter
from simulators.plc.uaserver import (
    ContractEvent,
    Handler,
    PlcAccounts,
    QuickStartServer,
    method_handler,
    node_id,
    resolve,
    string_argument,
    variant_type,
    write_value,
)

log = logging.getLogger(__name__)


def endpoint_with_port(endpoint: str, port: int) -> str:
    parts = urlsplit(endpoint)
    return urlunsplit(parts._replace(netloc=f"{parts.hostname}:{port}"))


class PlcSimulator:
    """One simulated PLC. `stop()` is the PLC going down: its server closes and every tote holds its
    place; `start()` brings it back (same port) with its memory (totes, command ids) intact.
    Dropping the memory too is not modelled: the adapter recovers from it the same way (it sends
    every unfinished command again)."""

    def __init__(self, site: Site, plc_id: str, *, speed: float = 1.0, seed: int | None = None,
                 endpoint: str | None = None, certificate: str | None = None,
                 private_key: str | None = None, trust: str | None = None) -> None:
        """`certificate` / `private_key` / `trust`: the server's own certificate and key and the
        certificates it trusts, by default the site file's `plcs.N.simulator`. A security policy needs
        all three and an account (`username` and its password): the server then offers that policy and
        mode only, to that account only, over a channel whose client certificate it trusts."""
        self._maps = floor_node_maps(site, plc_id)
        self.plc = site.plc(plc_id)
        self.endpoint = endpoint or self.plc.endpoint
        files = self.plc.simulator
        self._certificate = certificate or (files.certificate if files else None)
        self._private_key = private_key or (files.private_key if files else None)
        self._trust = trust or (files.trust if files else None)
        self._password = self.plc.resolved_password()
        if (policy := self.plc.security.policy) != "None":
            if not (self._certificate and self._private_key and self._trust):
                raise ValueError(f"PLC {plc_id} has security policy {policy}: the simulator needs its "
                                 "certificate, private key and trust list (plcs.N.simulator)")
            if not (self.plc.username and self._password):
                raise ValueError(f"PLC {plc_id} has security policy {policy}: the simulator needs an "
                                 "account (username and password_file)")
        clock = SimClock(speed, site.simulation.seed if seed is None else seed)
        boot = f"{int(time.time() * 1000) % 0xFFFFFF:06x}"
        counter = itertools.count(1)

        def next_scan_id() -> str:
            return f"{boot}-{next(counter)}"

        no_read = site.simulation.scanner.no_read_rate
        self._conveyors = {
            c.id: SimConveyor(c, clock, self._report, no_read_rate=no_read, next_scan_id=next_scan_id)
            for c in site.conveyors if c.plc == plc_id
        }
        self._sorters = {
            s.id: SimSorter(s, clock, self._report, no_read_rate=no_read, next_scan_id=next_scan_id)
            for s in site.sorters if s.plc == plc_id
        }
        self._machines: dict[str, Machine] = {**self._conveyors, **self._sorters}
        self._scan_points = ScanPointBoard(self._maps)
        self._server: Server | None = None
        self._outbox: asyncio.Queue[Report | FlushDue] | None = None
        self._emitter: asyncio.Task[None] | None = None
        self._variables: dict[tuple[str, str], ua.NodeId] = {}  # (device, signal) -> node
        self._events: dict[tuple[str, str], EventGenerator] = {}  # (device, event type) -> generator
        self.calls_from: Counter[str] = Counter()  # method calls by the calling session's name
        self.last_call_from: dict[str, float] = {}  # and when each last called
        for machine in self._machines.values():
            machine.halt(True)  # nothing moves before the PLC starts

    # --- the Python side: tests and the panel drive faults through these ----------------------
    def conveyor(self, device_id: str) -> SimConveyor:
        return self._conveyors[device_id]

    def sorter(self, device_id: str) -> SimSorter:
        return self._sorters[device_id]

    def scan_point(self, scan_point_id: str) -> ScanTally:
        """What a scanner read last and how often (its OPC UA variables show this, see scanpoints.py)."""
        return self._scan_points.tallies[scan_point_id]

    def estop(self) -> None:
        for machine in self._machines.values():
            machine.set_estop(True)

    def reset(self) -> None:
        for machine in self._machines.values():
            machine.reset()

    def inject_fault(self, target: str, fault: str) -> str:
        """The InjectFault method: `estop` (any target), or `jam[:segment]` / `clear` on a device."""
        if fault == Reason.ESTOP:
            self.estop()
            return ACCEPTED
        machine = self._machines.get(target)
        if machine is None:
            return rejected(Reason.UNKNOWN_TARGET)
        if fault == "clear":
            machine.clear()
            return ACCEPTED
        kind, _, segment = fault.partition(":")
        if kind != Reason.JAM:
            return rejected(Reason.UNKNOWN_FAULT)
        try:
            machine.inject_jam(segment or None)
        except ValueError:
            return rejected(Reason.UNKNOWN_SEGMENT)
        return ACCEPTED

    # --- test hooks: what a PLC programmer forcing tags could make a PLC send -----------------------
    async def force_value(self, device_id: str, signal: str, value: ua.Variant) -> None:
        """Write any value, of any type, to a variable (the next state change overwrites it)."""
        assert self._server is not None, "the PLC is stopped"
        await write_value(self._server, self._variables[(device_id, signal)], value)

    async def force_event(self, device_id: str, event_type: str, **fields: str) -> None:
        """Raise a contract event with whatever field values, e.g. a scan without a scan id."""
        event = next(e for e in opcua.EVENT_TYPES if e.name == event_type)
        await self._trigger(device_id, event, time.time(), **fields)

    @property
    def devices(self) -> dict[str, Machine]:
        """Every simulated conveyor and sorter of this PLC, by id."""
        return dict(self._machines)

    @property
    def server(self) -> Server | None:
        """The running asyncua server (None while stopped), for measurements that add nodes of their own."""
        return self._server

    # --- lifecycle --------------------------------------------------------------------------------
    @property
    def running(self) -> bool:
        return self._server is not None

    async def start(self) -> None:
        if self._server is not None:
            return
        secured = self.plc.security.policy != "None"
        trust = await asyncio.to_thread(TrustList.load, [self._trust]) if secured and self._trust else None
        users = PlcAccounts(self.plc.username, self._password, trust)
        server = Server(iserver=QuickStartServer(user_manager=users))
        server.disable_clock()  # its 1 s tick would only delay stop(); nothing here reads CurrentTime
        await server.init()
        server.set_endpoint(self.endpoint)
        server.set_server_name(f"floorctl PLC simulator {self.plc.id}")
        uri = await self._secure(server, trust)
        # Anonymous unless the site file gives the PLC an account, then that account only.
        token = ua.UserNameIdentityToken if self.plc.username else ua.AnonymousIdentityToken
        server.set_identity_tokens([token])
        await server.set_application_uri(uri)
        await self._build(server)
        await server.start()
        if server.bserver is not None and urlsplit(self.endpoint).port == 0:
            self.endpoint = endpoint_with_port(self.endpoint, server.bserver.port)  # keep it across restarts
        self._server = server
        outbox: asyncio.Queue[Report | FlushDue] = asyncio.Queue()
        self._outbox = outbox
        self._emitter = asyncio.create_task(self._emit(server, outbox), name=f"plc-sim-{self.plc.id}")
        self._scan_points.listen(lambda: outbox.put_nowait(FLUSH_DUE))
        for machine in self._machines.values():
            machine.halt(False)

    async def _secure(self, server: Server, trust: TrustList | None) -> str:
        """The site file's policy and mode only, with the server's certificate; its application URI
        (the one in its certificate, which clients check)."""
        security = self.plc.security
        uri = f"urn:floorctl:sim:{self.plc.id}"
        if security.policy == "None":
            server.set_security_policy([ua.SecurityPolicyType.NoSecurity])
            return uri
        assert self._certificate and self._private_key and trust is not None
        await server.load_certificate(self._certificate)
        await server.load_private_key(self._private_key)
        server.set_security_policy([getattr(ua.SecurityPolicyType, f"{security.policy}_{security.mode}")])
        server.set_certificate_validator(trust.validate)
        assert server.iserver.certificate is not None
        return certificate_uri(server.iserver.certificate) or uri

    async def stop(self, *, keep_running: bool = False) -> None:
        """Take the PLC down. With `keep_running` only its network side goes (a cut cable): totes
        keep moving, and whatever the PLC reports meanwhile reaches nobody."""
        if self._server is None:
            return
        for machine in self._machines.values():
            machine.halt(not keep_running)
        server, self._server = self._server, None
        self._outbox = None
        self._scan_points.listen(None)
        if self._emitter is not None:
            self._emitter.cancel()
            await asyncio.gather(self._emitter, return_exceptions=True)
            self._emitter = None
        await server.stop()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # --- address space ------------------------------------------------------------------------
    async def _build(self, server: Server) -> None:
        highest, uris = namespace_indexes(self._maps)
        await server.register_namespace(f"urn:floorctl:plc:{self.plc.id}")
        while len(await server.get_namespace_array()) <= highest:
            index = len(await server.get_namespace_array())
            await server.register_namespace(f"urn:floorctl:plc:{self.plc.id}:ns{index}")
        for uri in sorted(uris | {CONTRACT_NAMESPACE}):
            await server.register_namespace(uri)
        namespaces = await server.get_namespace_array()
        event_types = {e.name: await self._add_event_type(server, e, namespaces) for e in opcua.EVENT_TYPES}
        contract_events = {e.name: e for e in opcua.EVENT_TYPES}
        self._variables.clear()
        self._events.clear()
        objects: dict[str, Node] = {}
        for node_map in self._maps:
            obj = objects[node_map.device_id] = await self._add_object(server, node_map, namespaces)
            handlers = self._handlers(node_map)
            for signal in node_map.of_role(Role.VARIABLE):
                node = await self._add_variable(obj, node_map, signal.name, namespaces)
                self._variables[(node_map.device_id, signal.name)] = node.nodeid
            for signal in node_map.of_role(Role.METHOD):
                args = [string_argument(n) for n in signal.inputs]
                nodeid = resolve(node_map[signal.name], namespaces)
                await obj.add_method(nodeid, ua.QualifiedName(signal.name, nodeid.NamespaceIndex),
                                     handlers[signal.name], args, [string_argument("Status")])
            if node_map.kind is not None:
                for name, etype in event_types.items():
                    event = ContractEvent(etype.nodeid, contract_events[name].fields)
                    self._events[(node_map.device_id, name)] = await server.get_event_generator(event,
                                                                                                obj.nodeid)
        await self._scan_points.build(server, objects, namespaces)
        for machine in self._machines.values():
            await self._write_status(server, machine.status())

    async def _add_event_type(self, server: Server, event: EventType, namespaces: list[str]) -> Node:
        base = server.get_node(node_id(ua.ObjectIds.BaseEventType))
        nodeid = resolve(opcua.event_type_node(event), namespaces)
        etype = await base.add_object_type(nodeid, ua.QualifiedName(event.name, nodeid.NamespaceIndex))
        for field in event.fields:
            await etype.add_property(resolve(opcua.event_field_node(event, field), namespaces),
                                     ua.QualifiedName(field, nodeid.NamespaceIndex), "",
                                     ua.VariantType[opcua.EVENT_FIELD_TYPE])
        return etype

    async def _add_object(self, server: Server, node_map: NodeMap, namespaces: list[str]) -> Node:
        nodeid = resolve(node_map["Object"], namespaces)
        return await server.nodes.objects.add_object(nodeid, ua.QualifiedName(node_map.device_id,
                                                                              nodeid.NamespaceIndex))

    async def _add_variable(self, obj: Node, node_map: NodeMap, signal: str, namespaces: list[str]) -> Node:
        nodeid = resolve(node_map[signal], namespaces)
        datatype = variant_type(node_map.signals[signal])
        initial = CONTRACT_VERSION if signal == "ContractVersion" else ua.get_default_value(datatype)
        return await obj.add_variable(nodeid, ua.QualifiedName(signal, nodeid.NamespaceIndex), initial,
                                      datatype)

    def _handlers(self, node_map: NodeMap) -> dict[str, Handler]:
        actions: dict[str, Callable[..., str]]
        if node_map.kind is None:
            actions = {"InjectFault": self.inject_fault, "Reset": self._reset_status}
        elif isinstance(machine := self._machines[node_map.device_id], SimConveyor):
            actions = {"Transport": machine.transport}
        else:
            assert isinstance(machine, SimSorter)
            actions = {"Induct": machine.induct, "Divert": machine.divert}
        return {name: method_handler(action, len(node_map.signals[name].inputs), name=name, heard=self._heard)
                for name, action in actions.items()}

    def _heard(self, caller: str, method: str, args: Sequence[Any]) -> None:
        """Who sent each call: tests check that a controller that stepped down sent nothing more."""
        self.calls_from[caller] += 1
        self.last_call_from[caller] = time.time()

    def _reset_status(self) -> str:
        self.reset()
        return ACCEPTED

    # --- reports -> the wire -------------------------------------------------------------------
    def _report(self, report: Report) -> None:
        if isinstance(report, Scanned):
            self._scan_points.record(report)
        if self._outbox is not None:  # while the PLC is down nobody could hear it anyway
            self._outbox.put_nowait(report)

    async def _emit(self, server: Server, outbox: asyncio.Queue[Report | FlushDue]) -> None:
        """The one writer to the address space, so reports reach clients in the order they happened."""
        while True:
            report = await outbox.get()
            try:
                await self._publish(server, report)
            except Exception:  # a report that cannot be published must not silence the PLC
                log.exception("PLC %s: cannot publish %r", self.plc.id, report)

    async def _publish(self, server: Server, report: Report | FlushDue) -> None:
        if isinstance(report, FlushDue):
            await self._scan_points.flush(server)
        elif isinstance(report, StatusChanged):
            await self._write_status(server, report)
        elif isinstance(report, Scanned):
            await self._trigger(report.device_id, opcua.SCAN_EVENT, report.at,
                                ScanPoint=report.scan_point, ScanId=report.scan_id,
                                Barcode=report.barcode or "")
        elif isinstance(report, Completed):
            await self._trigger(report.device_id, opcua.TRANSPORT_COMPLETED_EVENT, report.at,
                                CommandId=report.command_id, ToteId=report.tote_id,
                                Destination=report.destination,
                                Outcome=opcua.Outcome.DONE if report.ok else opcua.Outcome.FAILED,
                                Reason=report.reason)
        elif isinstance(report, DivertReport):
            await self._trigger(report.device_id, opcua.DIVERTED_EVENT, report.at, ScanId=report.scan_id,
                                ToteId=report.barcode or "", Lane=report.lane or "",
                                CommandId=report.command_id)

    async def _trigger(self, device_id: str, event: EventType, at: float, **fields: str) -> None:
        generator = self._events[(device_id, event.name)]
        for name, value in fields.items():
            setattr(generator.event, name, str(value))
        await generator.trigger(time_attr=datetime.fromtimestamp(at, UTC), message=event.name)

    async def _write_status(self, server: Server, status: StatusChanged) -> None:
        values: dict[str, tuple[Any, ua.VariantType]] = {
            "State": (status.state.value, ua.VariantType.String),
            "OperationMode": (status.mode.value, ua.VariantType.String),
            "Fault": (status.fault, ua.VariantType.String),
            "EStop": (status.estop, ua.VariantType.Boolean),
        }
        for signal, (value, vtype) in values.items():
            nodeid = self._variables[(status.device_id, signal)]
            if server.read_attribute_value(nodeid).Value != ua.Variant(value, vtype):
                await write_value(server, nodeid, ua.Variant(value, vtype))
