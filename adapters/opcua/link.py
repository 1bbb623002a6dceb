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
from collections.abc import Callable, Sequence
from contextlib import suppress
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from asyncua import Client, ua
from asyncua.client.ua_client import UaClientState
from asyncua.common.subscription import DataChangeEvent, OpcEvent, Subscription
from asyncua.crypto import security_policies
from cryptography import x509
from cryptography.hazmat.primitives import serialization

from adapters.opcua import decode
from adapters.opcua.session import MethodRefused, SessionDevice
from adapters.opcua.wiring import EVENT_QUEUE, VALUE_QUEUE, Wiring, wire
from controller.contract import opcua as contract
from controller.contract.opcua import NodeMap, NodeMapError
from controller.ports import DeviceEvent, DeviceUnavailable, EventSink
from controller.security.opcua_trust import TrustList, Untrusted, certificate_uri
from controller.security.pki import load_certificate
from controller.site import PlcSpec, SiteError

log = logging.getLogger(__name__)

MAX_IN_FLIGHT = 32  # calls per session; asyncua servers drop a connection past 500 queued requests
FIRST_RETRY_S = 0.2
CLIENT_URI = "urn:floorctl:controller"  # used when the client has no certificate naming another
SESSION_TIMEOUT_MS = 60_000  # a session is never resumed (every reconnect makes a new one): keep it short
KEEPALIVE_MS = 5_000  # an idle subscription still hears from the server this often
POLICIES: dict[str, type[security_policies.SecurityPolicy]] = {
    "None": security_policies.SecurityPolicyNone,
    "Basic256Sha256": security_policies.SecurityPolicyBasic256Sha256,
    "Aes128Sha256RsaOaep": security_policies.SecurityPolicyAes128Sha256RsaOaep,
    "Aes256Sha256RsaPss": security_policies.SecurityPolicyAes256Sha256RsaPss,
}


class ContractMismatch(Exception):
    pass


class SecurityRefused(Exception):
    """The controller refuses the PLC (its certificate, its endpoints). `str()` says why."""


class PlcLink:
    def __init__(self, plc: PlcSpec, endpoint: str, maps: Sequence[NodeMap], counters: Counter[str], *,
                 client_name: str | None = None, may_send: Callable[[], bool] | None = None) -> None:
        self.plc = plc
        self.client_name = client_name  # the session's name on the PLC (a hot-standby pair: the instance)
        self._may_send = may_send or (lambda: True)
        self.endpoint = endpoint
        self._maps = list(maps)
        self._counters = counters
        self.devices: dict[str, SessionDevice] = {}  # filled by the hub; the link pushes to them
        self._wiring: Wiring | None = None
        self._client: Client | None = None
        self._in_flight = asyncio.Semaphore(MAX_IN_FLIGHT)
        self._sink: EventSink = lambda event: None
        self.tried = asyncio.Event()  # set after the first connection attempt, whatever its outcome
        self.last_error: str | None = None  # why the last attempt failed, until a session is up

    @property
    def online(self) -> bool:
        return self._wiring is not None

    # --- calls ---------------------------------------------------------------------------------
    async def call(self, device_id: str, method: str, args: Sequence[str]) -> Any:
        """Call a device method; the reply (the Status output) as sent, for the device to judge.
        Raises MethodRefused, or DeviceUnavailable when the call may not have reached the PLC."""
        try:
            return await self._call(device_id, method, args)
        except MethodRefused as exc:
            self._counters["call_refused"] += 1
            log.error("%s: PLC %s refused %s (%s): check the node map", device_id, self.plc.id, method, exc)
            raise
        except (TimeoutError, DeviceUnavailable, ConnectionError, OSError, ua.UaError) as exc:
            self._counters["call_failed"] += 1
            log.warning("%s: %s %s not delivered: %r", device_id, method, args[0] if args else "", exc)
            if isinstance(exc, DeviceUnavailable):
                raise
            raise DeviceUnavailable(
                f"{device_id}: {method} not delivered to PLC {self.plc.id}: {exc!r}") from exc

    async def _call(self, device_id: str, method: str, args: Sequence[str]) -> Any:
        wiring, client = self._wiring, self._client
        if wiring is None or client is None:
            raise DeviceUnavailable(f"{device_id}: PLC {self.plc.id} is not connected")
        if not self._may_send():
            self._counters["fenced"] += 1
            raise DeviceUnavailable(f"{device_id}: this controller does not lead the floor now")
        request = ua.CallMethodRequest()
        request.ObjectId = wiring.node(device_id, "Object")
        request.MethodId = wiring.node(device_id, method)
        request.InputArguments = [ua.Variant(a, ua.VariantType.String) for a in args]
        async with self._in_flight:
            (result,) = await client.uaclient.call([request])
        if not result.StatusCode.is_good():
            raise MethodRefused(result.StatusCode.name)
        return result.OutputArguments[0].Value if result.OutputArguments else None

    # --- the supervisor --------------------------------------------------------------------------
    async def run(self, sink: EventSink) -> None:
        """Keep the session up until cancelled. Never raises anything else. Why the last attempt
        failed is `last_error` until a session is up again."""
        self._sink = sink
        delay = FIRST_RETRY_S
        while True:
            try:
                if await self._session():
                    delay = FIRST_RETRY_S
            except (ContractMismatch, NodeMapError) as exc:
                self._failed("incompatible_plc", exc, logging.ERROR)
            except (SecurityRefused, SiteError, FileNotFoundError) as exc:  # also unreadable secret files
                self._failed("security_refused", exc, logging.ERROR)
            except ua.UaStatusCodeError as exc:
                refused = exc.code in _REFUSED_CODES
                self._failed("login_refused" if refused else "connect_failed", exc,
                             logging.ERROR if refused else logging.INFO)
            except (TimeoutError, ConnectionError, OSError, ua.UaError) as exc:
                self._failed("connect_failed", exc, logging.INFO)
            except Exception as exc:
                self._counters["link_crash"] += 1
                self.last_error = f"session crashed: {exc!r}"
                log.exception("PLC %s: session crashed", self.plc.id)
            self.tried.set()
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.plc.reconnect_max_delay_s)

    def _failed(self, counter: str, exc: BaseException, level: int) -> None:
        self._counters[counter] += 1
        if counter != "connect_failed":
            self._counters["connect_failed"] += 1  # every attempt that did not get a session
        self.last_error = refusal(exc)
        log.log(level, "PLC %s at %s: %s", self.plc.id, self.endpoint, self.last_error)

    async def _session(self) -> bool:
        """One connection, from connect to loss. True if it got as far as being online."""
        client = new_client(self.plc, self.endpoint, name=self.client_name)
        tasks: list[asyncio.Task[None]] = []
        try:
            await asyncio.wait_for(secure(client, self.plc, self.endpoint), self.plc.timeout_s * 2)
            await asyncio.wait_for(client.connect(), self.plc.timeout_s * 2)
            namespaces = await client.get_namespace_array()
            wiring = wire(self._maps, namespaces)
            await self._check_contract(client, wiring)
            subscription = await self._subscribe(client, wiring)
            await self._read_state(client, wiring)
            tasks.append(asyncio.create_task(self._consume(subscription, wiring),
                                             name=f"opcua-{self.plc.id}-events"))
            self._client, self._wiring = client, wiring
            self._counters["connects"] += 1
            self.last_error = None
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

    async def _check_contract(self, client: Client, wiring: Wiring) -> None:
        version_node = client.get_node(wiring.node(self.plc.id, "ContractVersion"))
        (value,) = await client.read_attributes([version_node])
        version = decode.text(value.Value.Value) if _good(value) and value.Value else None
        if version is None:
            self._counters["no_contract_version"] += 1
            log.warning("PLC %s publishes no contract version; assuming %s", self.plc.id,
                        contract.CONTRACT_VERSION)
        elif version.split(".")[0] != contract.CONTRACT_VERSION.split(".")[0]:
            raise ContractMismatch(f"speaks contract {version}, floorctl speaks {contract.CONTRACT_VERSION}")

    async def _subscribe(self, client: Client, wiring: Wiring) -> Subscription:
        # Iterator mode with an unbounded queue: nothing the server sent is ever dropped on our side.
        subscription = await client.create_subscription(self._subscription_parameters(), None,
                                                        queue_maxsize=0)
        for source in wiring.sources:
            await subscription.subscribe_events(client.get_node(source), evfilter=wiring.event_filter,
                                                queuesize=EVENT_QUEUE)
        await subscription.subscribe_data_change([client.get_node(n) for n in wiring.variables],
                                                 queuesize=VALUE_QUEUE)
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
        """Every device sends again what the engine still waits for (the PLC dedupes on the ids)."""
        await asyncio.gather(*(device.send_unfinished() for device in self.devices.values()))

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
            if (status := device.link_changed(self.online)) is not None:
                self._emit(status)

    def _emit(self, event: DeviceEvent) -> None:
        try:
            self._sink(event)
        except Exception:  # the sink must not raise; if it does, the link carries on regardless
            self._counters["sink_error"] += 1
            log.exception("event sink raised on %r", event)


def new_client(plc: PlcSpec, endpoint: str, *, name: str | None = None) -> Client:
    """An asyncua client for the PLC's endpoint with the site file's account (not connected yet;
    `secure` it, then connect)."""
    client = Client(endpoint, timeout=plc.timeout_s)
    client.application_uri = CLIENT_URI
    if name:
        client.name = client.description = name
    client.session_timeout = SESSION_TIMEOUT_MS
    if plc.username:
        client.set_user(plc.username)
        client.set_password(plc.resolved_password() or "")
    return client


async def secure(client: Client, plc: PlcSpec, endpoint: str) -> None:
    """The site file's security policy and mode, with the controller's certificate and key (files),
    and only with a PLC certificate that is pinned or signed by a CA of the site's trust list:
    checked here, before anything but a discovery request goes out, and again by asyncua when the
    session is created (the certificate it signs with must be the one checked). A PLC that does not
    offer the site file's policy and mode (`None` against a secure-only PLC) is refused here too."""
    security = plc.security
    policy = POLICIES[security.policy]
    mode = ua.MessageSecurityMode.None_ if security.mode == "None" else ua.MessageSecurityMode[
        security.mode]
    endpoints = await client.connect_and_get_server_endpoints()
    try:
        offer = Client.find_endpoint(endpoints, mode, policy.URI)
    except ua.UaError:
        offered = ", ".join(sorted({f"{_policy_name(e.SecurityPolicyUri)}/{e.SecurityMode.name}"
                                    for e in endpoints})) or "nothing"
        raise SecurityRefused(f"the PLC offers no {security.policy}/{security.mode} endpoint "
                              f"(it offers {offered.replace('None_', 'None')})") from None
    if security.policy == "None":
        return
    assert security.certificate and security.private_key  # the site file's schema makes sure
    trust, uri = await asyncio.to_thread(_controller_side, security.trusted(), security.certificate)
    # The server checks that the ApplicationUri a client announces is the one in its certificate.
    client.application_uri = uri or CLIENT_URI
    der = _first_certificate(offer.ServerCertificate)
    if not der:
        raise SecurityRefused("the PLC presents no certificate")
    host = urlsplit(endpoint).hostname
    try:
        trust.check(x509.load_der_x509_certificate(der), uri=offer.Server.ApplicationUri, host=host)
    except Untrusted as exc:
        raise SecurityRefused(f"the PLC's certificate is not trusted: {exc}") from None

    async def same_certificate(certificate: x509.Certificate, server: ua.ApplicationDescription) -> None:
        if certificate.public_bytes(serialization.Encoding.DER) != der:
            raise SecurityRefused("the PLC signed its session with another certificate than it presented")

    client.certificate_validator = same_certificate
    await client.set_security(policy, security.certificate, security.private_key, server_certificate=der,
                              mode=mode)


def _good(value: ua.DataValue) -> bool:
    return value.StatusCode is None or value.StatusCode.is_good()


def _controller_side(trusted: Sequence[str], certificate: str) -> tuple[TrustList, str | None]:
    """The trust list and the application URI of the controller's own certificate (file reads)."""
    return TrustList.load(trusted), certificate_uri(load_certificate(Path(certificate)))


def _first_certificate(chain: bytes | None) -> bytes | None:
    """The server's own certificate from a DER chain (asyncua's endpoints may carry a chain)."""
    if not chain or len(chain) < 2:
        return chain or None
    if chain[1] < 0x80:  # a DER SEQUENCE: tag, length (short or long form), content
        return chain[:2 + chain[1]]
    size = chain[1] & 0x7F
    return chain[:2 + size + int.from_bytes(chain[2:2 + size], "big")]


def _policy_name(uri: str) -> str:
    return uri.rsplit("#", 1)[-1]


def refusal(exc: BaseException) -> str:
    """Why a connection failed, in words for the health page and the alarm."""
    if isinstance(exc, SecurityRefused | ContractMismatch | NodeMapError | SiteError | FileNotFoundError):
        return str(exc)
    if isinstance(exc, ua.UaStatusCodeError):
        code = exc.code
        for codes, words in _REFUSALS:
            if code in codes:
                return f"{words} ({ua.StatusCode(code).name})"
        return f"the PLC refused the connection ({ua.StatusCode(code).name})"
    if isinstance(exc, TimeoutError):
        return "no answer from the PLC in time"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused: nothing listens at the endpoint"
    return f"cannot connect: {exc!r}"


_REFUSALS: list[tuple[frozenset[int], str]] = [
    (frozenset({ua.StatusCodes.BadUserAccessDenied, ua.StatusCodes.BadIdentityTokenRejected,
                ua.StatusCodes.BadIdentityTokenInvalid}),
     "the PLC refused the user name or password"),
    (frozenset({ua.StatusCodes.BadCertificateUntrusted, ua.StatusCodes.BadCertificateInvalid,
                ua.StatusCodes.BadCertificateUriInvalid, ua.StatusCodes.BadCertificateTimeInvalid,
                ua.StatusCodes.BadCertificateUseNotAllowed, ua.StatusCodes.BadCertificateRevoked,
                ua.StatusCodes.BadSecurityChecksFailed}),
     "the PLC does not trust the controller's certificate"),
    (frozenset({ua.StatusCodes.BadSecurityPolicyRejected, ua.StatusCodes.BadSecurityModeRejected}),
     "the PLC refuses the site file's security policy"),
]
_REFUSED_CODES = frozenset().union(*(codes for codes, _ in _REFUSALS))
