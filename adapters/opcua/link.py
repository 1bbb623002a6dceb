"""One PLC's OPC UA session, kept alive by one supervisor.

The supervisor connects, checks the contract version, resolves the node maps against the server's
namespaces, subscribes (events of every device object, its state variables), reads the current state,
reports the devices online and sends every unfinished command again (the PLC dedupes on the id and
repeats the final report of a finished one). Then it waits for the link to drop, reports the devices
offline, and starts over with a growing delay. A PLC restart thus costs nothing but the outage.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Sequence
from contextlib import suppress
from typing import Any

from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState
from asyncua.common.subscription import DataChangeEvent, OpcEvent, Subscription
from asyncua.crypto import security_policies
from cryptography import x509

from adapters.opcua import contract, decode
from adapters.opcua.devices import PlcDevice
from adapters.opcua.nodemap import NodeMap, NodeMapError
from adapters.opcua.tickets import Entry
from adapters.opcua.wiring import EVENT_QUEUE, VALUE_QUEUE, Wiring, wire
from controller.ports import DeviceEvent, DeviceUnavailable, EventSink
from controller.site import Plc

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 32  # calls per session; asyncua servers drop a connection past 500 queued requests
FIRST_RETRY_S = 0.2
CLIENT_URI = "urn:floorctl:controller"  # used when the client has no certificate naming another
SESSION_TIMEOUT_MS = 60_000  # a session is never resumed (every reconnect makes a new one): keep it short
KEEPALIVE_MS = 5_000  # an idle subscription still hears from the server this often
POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128Sha256RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256Sha256RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}


class MethodRefused(Exception):
    """The server refused a method call itself (bad node id, bad arguments): a configuration fault."""

    def __init__(self, status: ua.StatusCode) -> None:
        super().__init__(status.name)
        self.status = status


class ContractMismatch(Exception):
    pass


class PlcLink:
    def __init__(self, plc: Plc, endpoint: str, maps: Sequence[NodeMap], counters: Counter[str]) -> None:
        self.plc = plc
        self.endpoint = endpoint
        self._maps = list(maps)
        self._counters = counters
        self.devices: dict[str, PlcDevice] = {}
        self._wiring: Wiring | None = None
        self._client: Client | None = None
        self._in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._sink: EventSink = lambda event: None
        self.tried = asyncio.Event()  # set after the first connection attempt, whatever its outcome

    @property
    def online(self) -> bool:
        return self._wiring is not None

    # --- calls ---------------------------------------------------------------------------------
    async def call(self, device_id: str, method: str, args: Sequence[str]) -> Any:
        """Call a device method; the reply (the Status output) as sent, for the caller to judge."""
        wiring, client = self._wiring, self._client
        if wiring is None or client is None:
            raise DeviceUnavailable(f"{device_id}: PLC {self.plc.id} is not connected")
        request = ua.CallMethodRequest()
        request.ObjectId = wiring.node(device_id, "Object")
        request.MethodId = wiring.node(device_id, method)
        request.InputArguments = [ua.Variant(a, ua.VariantType.String) for a in args]
        async with self._in_flight:
            (result,) = await client.uaclient.call([request])
        if not result.StatusCode.is_good():
            raise MethodRefused(result.StatusCode)
        return result.OutputArguments[0].Value if result.OutputArguments else None

    async def send(self, device: PlcDevice, entry: Entry) -> None:
        """Put a command on the wire and settle its acknowledgement. A call that fails in transit
        leaves the ticket waiting: it goes out again after a reconnect, or when the engine retries."""
        entry.ticket.mark_sent()
        try:
            reply = await self.call(device.device_id, entry.method, entry.args)
        except MethodRefused as exc:
            self._counters["call_refused"] += 1
            log.error("%s: PLC %s refused %s (%s): check the node map", device.device_id, self.plc.id,
                      entry.method, exc)
            device.tickets.reject(entry.ticket, f"opcua:{exc}")
            return
        except (TimeoutError, DeviceUnavailable, ConnectionError, OSError, ua.UaError) as exc:
            self._counters["call_failed"] += 1
            log.warning("%s: %s %s not delivered: %r", device.device_id, entry.method, entry.ticket.command_id, exc)
            return
        device.answered(entry, reply)

    # --- the supervisor --------------------------------------------------------------------------
    async def run(self, sink: EventSink) -> None:
        """Keep the session up until cancelled. Never raises anything else."""
        self._sink = sink
        delay = FIRST_RETRY_S
        while True:
            try:
                if await self._session():
                    delay = FIRST_RETRY_S
            except (ContractMismatch, NodeMapError) as exc:
                self._counters["incompatible_plc"] += 1
                log.error("PLC %s at %s: %s", self.plc.id, self.endpoint, exc)
            except (TimeoutError, ConnectionError, OSError, ua.UaError) as exc:
                self._counters["connect_failed"] += 1
                log.info("PLC %s at %s: cannot connect: %r", self.plc.id, self.endpoint, exc)
            except Exception:
                self._counters["link_crash"] += 1
                log.exception("PLC %s: session crashed", self.plc.id)
            self.tried.set()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.plc.reconnect_max_delay_s)

    async def _session(self) -> bool:
        """One connection, from connect to loss. True if it got as far as being online."""
        client = Client(self.endpoint, timeout=self.plc.timeout_s)
        client.application_uri = CLIENT_URI
        client.session_timeout = SESSION_TIMEOUT_MS
        if self.plc.username:
            client.set_user(self.plc.username)
            client.set_password(self.plc.password or "")
        tasks: list[asyncio.Task[None]] = []
        try:
            await self._secure(client)
            await asyncio.wait_for(client.connect(), self.plc.timeout_s * 2)
            namespaces = await client.get_namespace_array()
            wiring = wire(self._maps, namespaces)
            await self._check_contract(client, wiring)
            subscription = await self._subscribe(client, wiring)
            await self._read_state(client, wiring)
            tasks.append(asyncio.create_task(self._consume(subscription, wiring), name=f"opcua-{self.plc.id}-events"))
            self._client, self._wiring = client, wiring
            self._counters["connects"] += 1
            self._link_changed()
            self.tried.set()
            tasks.append(asyncio.create_task(self._send_unfinished(), name=f"opcua-{self.plc.id}-resend"))
            await self._until_lost(client)
            self._counters["link_lost"] += 1
            log.warning("PLC %s: link lost", self.plc.id)
            return True
        finally:
            was_online = self._wiring is not None
            self._client = self._wiring = None
            if was_online:
                self._link_changed()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            await self._close(client)

    async def _secure(self, client: Client) -> None:
        """The site file's security policy and mode, with the controller's certificate and key (files)."""
        security = self.plc.security
        if security.policy == "None":
            return
        assert security.certificate and security.private_key  # the site file's schema makes sure
        # The server checks that the ApplicationUri a client announces is the one in its certificate.
        uri = await asyncio.to_thread(_certificate_uri, security.certificate)
        client.application_uri = uri or CLIENT_URI
        await client.set_security(POLICIES[security.policy], security.certificate, security.private_key,
                                  server_certificate=security.server_certificate,
                                  mode=getattr(ua.MessageSecurityMode, security.mode))

    async def _check_contract(self, client: Client, wiring: Wiring) -> None:
        (value,) = await client.read_attributes([client.get_node(wiring.node(self.plc.id, "ContractVersion"))])
        version = decode.text(value.Value.Value) if _good(value) and value.Value else None
        if version is None:
            self._counters["no_contract_version"] += 1
            log.warning("PLC %s publishes no contract version; assuming %s", self.plc.id, contract.CONTRACT_VERSION)
        elif version.split(".")[0] != contract.CONTRACT_VERSION.split(".")[0]:
            raise ContractMismatch(f"speaks contract {version}, floorctl speaks {contract.CONTRACT_VERSION}")

    async def _subscribe(self, client: Client, wiring: Wiring) -> Subscription:
        # Iterator mode with an unbounded queue: nothing the server sent is ever dropped on our side.
        subscription = await client.create_subscription(self._subscription_parameters(), None, queue_maxsize=0)
        for source in wiring.sources:
            await subscription.subscribe_events(client.get_node(source), evfilter=wiring.event_filter,
                                                queuesize=EVENT_QUEUE)
        await subscription.subscribe_data_change([client.get_node(n) for n in wiring.variables], queuesize=VALUE_QUEUE)
        return subscription

    def _subscription_parameters(self) -> ua.CreateSubscriptionParameters:
        # Not below 1 ms: an asyncua server takes 0 as "publish at once" and then sends no keep-alives,
        # which an asyncua client takes for a dead subscription and re-creates, losing what was queued.
        interval = max(1.0, self.plc.publishing_interval_ms)
        keepalive = max(1, round(KEEPALIVE_MS / interval))
        params = ua.CreateSubscriptionParameters()
        params.RequestedPublishingInterval = interval
        params.RequestedMaxKeepAliveCount = ua.UInt32(keepalive)
        params.RequestedLifetimeCount = ua.UInt32(3 * keepalive)  # the minimum the standard allows
        params.MaxNotificationsPerPublish = ua.UInt32(0)  # no limit: a busy sorter needs them all
        params.PublishingEnabled = True
        return params

    async def _read_state(self, client: Client, wiring: Wiring) -> None:
        nodes = list(wiring.variables)
        values = await client.read_attributes([client.get_node(n) for n in nodes])
        for node, value in zip(nodes, values):
            device_id, signal = wiring.variables[node]
            if not _good(value) or value.Value is None:
                self._counters["bad_value"] += 1
                log.warning("%s: cannot read %s: %s", device_id, signal, value.StatusCode)
                continue
            self.devices[device_id].value_changed(signal, value.Value.Value)  # reported when online

    async def _consume(self, subscription: Subscription, wiring: Wiring) -> None:
        async for item in subscription:
            try:
                if isinstance(item, OpcEvent):
                    event = item.event
                    self._event(wiring, {op.BrowsePath[0].Name: field.Value for op, field
                                         in zip(event.select_clauses or (), event.event_fields or ())})
                elif isinstance(item, DataChangeEvent):
                    device_id, signal = wiring.variables[item.node.nodeid]
                    if (status := self.devices[device_id].value_changed(signal, item.value)) is not None:
                        self._emit(status)
            except Exception:  # whatever the server sent, the next notification still gets read
                self._counters["bad_event"] += 1
                log.exception("PLC %s: cannot handle %r", self.plc.id, item)

    def _event(self, wiring: Wiring, values: dict[str, Any]) -> None:
        device_id = wiring.sources.get(values.get("SourceNode"))  # type: ignore[arg-type]
        kind = wiring.event_types.get(values.get("EventType"))  # type: ignore[arg-type]
        if device_id is None or kind is None:
            self._counters["bad_event"] += 1
            log.warning("PLC %s: event from an unknown source or of an unknown type: %r", self.plc.id, values)
            return
        self.devices[device_id].event(kind, values, self._emit)

    async def _send_unfinished(self) -> None:
        """Re-send what the engine still waits for: after a PLC restart its memory may be empty, and
        a completion raised while the link was down is only heard again this way."""
        entries = [(device, entry) for device in self.devices.values() for entry in device.tickets.unfinished()]
        if entries:
            self._counters["resent"] += len(entries)
            log.info("PLC %s: sending %d unfinished commands again", self.plc.id, len(entries))
            await asyncio.gather(*(self.send(device, entry) for device, entry in entries))

    async def _until_lost(self, client: Client) -> None:
        async with client.subscribe_state() as states:
            while client.state is UaClientState.CONNECTED:
                await states.next_change()

    async def _close(self, client: Client) -> None:
        with suppress(Exception):
            await asyncio.wait_for(client.disconnect(), self.plc.timeout_s)

    # --- to the engine ---------------------------------------------------------------------------
    def _link_changed(self) -> None:
        for device in self.devices.values():
            if (status := device.link_changed()) is not None:
                self._emit(status)

    def _emit(self, event: DeviceEvent) -> None:
        try:
            self._sink(event)
        except Exception:  # the sink must not raise; if it does, the link carries on regardless
            self._counters["sink_error"] += 1
            log.exception("event sink raised on %r", event)


def _good(value: ua.DataValue) -> bool:
    return value.StatusCode is None or value.StatusCode.is_good()


def _certificate_uri(path: str) -> str | None:
    """The application URI in a certificate's subjectAltName (DER or PEM), if any."""
    with open(path, "rb") as file:
        data = file.read()
    certificate = x509.load_pem_x509_certificate(data) if data.startswith(b"-----") else x509.load_der_x509_certificate(data)
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = names.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None
