"""OPC UA signed and encrypted sessions between OpcUaHub and the PLC simulator, with the credentials
`floorctl credentials` writes: the secure session works end to end, and each wrong piece (password,
client certificate, server certificate, security policy) is refused with a reason on the hub, never a
hang. Real asyncua server on a free port, real client; every test is bounded to a few seconds."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from asyncua import Client, ua

from adapters.opcua import OpcUaHub
from controller.security.opcua_certs import OpcUaFiles, application_uri, write_opcua_credentials
from controller.security.opcua_certs import site_file_gaps as opcua_site_file_gaps
from controller.security.pki import CertificateAuthority, issue, make_ca
from controller.site import PlcSpec, Site, load_site
from simulators.plc import PlcSimulator, endpoint_with_port
from tests.conftest import EventLog

ROOT = Path(__file__).resolve().parents[2]
BOUND_S = 8.0  # a refusal is reported within the hub's first attempt (timeout_s 2 * 2), never later


@dataclass
class SecureFloor:
    site: Site
    files: OpcUaFiles
    ca: CertificateAuthority
    tmp: Path

    def plc(self, **changes: Any) -> Site:
        """The site with its PLC changed (keys of PlcSpec, `security` as a dict of changes)."""
        plc = self.site.plcs[0]
        security = plc.security.model_copy(update=changes.pop("security", {}))
        plc = plc.model_copy(update={**changes, "security": security})
        return self.site.model_copy(update={"plcs": [plc]})


def plcs_with_credentials_in(site: Site, credentials: Path) -> Site:
    """config/secure-site.yaml's PLC paths (credentials/opcua/...) in `credentials`."""

    def moved(path: str | None) -> str | None:
        return None if path is None else str(credentials / Path(path).relative_to("credentials"))

    plcs = []
    for plc in site.plcs:
        keys = ("certificate", "private_key", "server_certificate", "trust")
        security = plc.security.model_copy(update={key: moved(getattr(plc.security, key)) for key in keys})
        simulator = plc.simulator and plc.simulator.model_copy(update={
            key: moved(getattr(plc.simulator, key)) for key in ("certificate", "private_key", "trust")})
        plcs.append(plc.model_copy(update={"security": security, "simulator": simulator,
                                           "password_file": moved(plc.password_file)}))
    return site.model_copy(update={"plcs": plcs})


@pytest.fixture
def secure(demo_site: Site, tmp_path: Path) -> SecureFloor:
    ca = make_ca(tmp_path / "ca", "test site CA")
    files = write_opcua_credentials(demo_site, ca, tmp_path / "secrets")
    plc = demo_site.plcs[0]
    mine = files.plcs[plc.id]
    spec = PlcSpec.model_validate({
        **plc.model_dump(exclude={"security", "simulator"}),
        "username": mine.username, "password_file": str(mine.password),
        "security": {"policy": "Basic256Sha256", "mode": "SignAndEncrypt",
                     "certificate": str(files.controller),
                     "private_key": str(files.controller_key), "trust": str(files.controller_trust)},
        "simulator": {"certificate": str(mine.issued), "private_key": str(mine.key),
                      "trust": str(mine.trust)},
    })
    return SecureFloor(demo_site.model_copy(update={"plcs": [spec]}), files, ca, tmp_path)


@pytest.fixture
async def plc(secure: SecureFloor) -> AsyncIterator[PlcSimulator]:
    async with PlcSimulator(secure.site, "plc-1", speed=50,
                            endpoint=endpoint_with_port(secure.site.plcs[0].endpoint, 0)) as sim:
        yield sim


async def connect(site: Site, sim: PlcSimulator, events: EventLog) -> tuple[OpcUaHub, float]:
    hub = OpcUaHub(site, endpoints={"plc-1": sim.endpoint})
    started = time.monotonic()
    await asyncio.wait_for(hub.start(events), BOUND_S)
    return hub, time.monotonic() - started


async def refused(site: Site, sim: PlcSimulator, events: EventLog) -> str:
    """Start a hub that must not get a session; the reason it reports."""
    hub, took = await connect(site, sim, events)
    try:
        assert not any(d.status.online for d in hub.devices())
        assert not hub.connected
        errors = hub.link_errors()
        assert set(errors) == {"plc-1"}, hub.counters
        assert took < BOUND_S
        return errors["plc-1"]
    finally:
        await asyncio.wait_for(hub.stop(), BOUND_S)


async def test_a_secure_session_carries_a_transport_end_to_end(
        secure: SecureFloor, plc: PlcSimulator, events: EventLog) -> None:
    hub, _ = await connect(secure.site, plc, events)
    try:
        assert hub.connected and hub.link_errors() == {}, hub.counters
        ticket = await hub.conveyor("loop-1").transport("t-sec", "TOTE-S", "PS-1")
        assert (await asyncio.wait_for(ticket.done, 5)).ok
        assert plc.conveyor("loop-1").executed["t-sec"] == 1
    finally:
        await hub.stop()


async def test_the_example_secure_site_reaches_its_plc_with_what_credentials_writes(
        tmp_path: Path, events: EventLog) -> None:
    example = load_site(ROOT / "config" / "secure-site.yaml")
    write_opcua_credentials(example, make_ca(tmp_path / "ca", "site CA"), tmp_path / "credentials")
    assert opcua_site_file_gaps(example, Path("credentials")) == []
    site = plcs_with_credentials_in(example, tmp_path / "credentials")
    endpoint = endpoint_with_port(site.plcs[0].endpoint, 0)
    async with PlcSimulator(site, "plc-1", speed=50, endpoint=endpoint) as sim:
        hub, _ = await connect(site, sim, events)
        try:
            assert hub.connected and hub.link_errors() == {}, hub.counters
        finally:
            await hub.stop()


async def test_a_wrong_password_is_refused(secure: SecureFloor, plc: PlcSimulator, events: EventLog) -> None:
    reason = await refused(secure.plc(password="guess", password_file=None), plc, events)
    assert reason.startswith("the PLC refused the user name or password"), reason


async def test_anonymous_is_refused_on_a_secure_channel(
        secure: SecureFloor, plc: PlcSimulator, events: EventLog) -> None:
    reason = await refused(secure.plc(username=None, password_file=None), plc, events)
    assert "refused the user name or password" in reason, reason


async def test_a_client_certificate_of_another_ca_is_refused(
        secure: SecureFloor, plc: PlcSimulator, events: EventLog) -> None:
    stranger = make_ca(secure.tmp / "other-ca", "another CA")
    cert = issue(stranger, "controller", secure.tmp / "stranger", server=False, hosts=["127.0.0.1"],
                 uri=application_uri(secure.site, "controller"), encoding="der")
    site = secure.plc(security={"certificate": str(cert.cert_path), "private_key": str(cert.key_path)})
    reason = await refused(site, plc, events)
    assert reason.startswith("the PLC does not trust the controller's certificate"), reason


async def test_a_client_certificate_of_the_site_ca_that_the_plc_does_not_list_is_refused(
        secure: SecureFloor, plc: PlcSimulator, events: EventLog) -> None:
    """Another PLC's certificate (same CA, both uses) opens no session on this one."""
    other = issue(secure.ca, "plc-2", secure.tmp / "plc-2", server=True, hosts=["127.0.0.1"],
                  uri=application_uri(secure.site, "plc-2"), encoding="der")
    site = secure.plc(security={"certificate": str(other.cert_path), "private_key": str(other.key_path)})
    reason = await refused(site, plc, events)
    assert "does not trust the controller's certificate" in reason, reason


@pytest.mark.parametrize("how", ["trust-list", "pinned"])
async def test_a_server_certificate_that_is_not_trusted_is_refused_before_logging_in(
        secure: SecureFloor, events: EventLog, how: str) -> None:
    stranger = make_ca(secure.tmp / "other-ca", "impostor CA")
    fake = issue(stranger, "plc-1", secure.tmp / "impostor", server=True, hosts=["127.0.0.1"],
                 uri=application_uri(secure.site, "plc-1"), encoding="der")
    site = secure.site
    if how == "pinned":  # the site pins the real PLC's certificate instead of trusting the CA
        site = secure.plc(security={"trust": None,
                                    "server_certificate": str(secure.files.plcs["plc-1"].issued)})
    logins: list[str | None] = []
    async with PlcSimulator(site, "plc-1", speed=50, endpoint=endpoint_with_port(site.plcs[0].endpoint, 0),
                            certificate=str(fake.cert_path), private_key=str(fake.key_path)) as impostor:
        assert impostor.server is not None
        accounts = impostor.server.iserver.user_manager
        real = accounts.get_user
        accounts.get_user = lambda *a, **kw: logins.append(kw.get("username")) or real(*a, **kw)  # type: ignore[method-assign]
        reason = await refused(site, impostor, events)
    assert reason.startswith("the PLC's certificate is not trusted"), reason
    assert "'plc-1' issued by 'impostor CA'" in reason, reason
    assert logins == []  # the password never went to the impostor


async def test_a_certificate_of_the_site_for_another_host_is_refused(
        secure: SecureFloor, events: EventLog) -> None:
    elsewhere = issue(secure.ca, "plc-1", secure.tmp / "elsewhere", server=True, hosts=["10.9.9.9"],
                      uri=application_uri(secure.site, "plc-1"), encoding="der")
    async with PlcSimulator(secure.site, "plc-1", speed=50,
                            endpoint=endpoint_with_port(secure.site.plcs[0].endpoint, 0),
                            certificate=str(elsewhere.cert_path), private_key=str(elsewhere.key_path)) as sim:
        reason = await refused(secure.site, sim, events)
    assert "does not name host '127.0.0.1'" in reason, reason


async def test_no_security_against_a_secure_only_plc_is_refused(
        secure: SecureFloor, plc: PlcSimulator, events: EventLog) -> None:
    site = secure.plc(security={"policy": "None", "mode": "None"})
    reason = await refused(site, plc, events)
    assert reason == "the PLC offers no None/None endpoint (it offers Basic256Sha256/SignAndEncrypt)", reason


async def test_the_plc_refuses_a_client_that_logs_in_over_a_channel_without_security(
        secure: SecureFloor, plc: PlcSimulator, monkeypatch: pytest.MonkeyPatch) -> None:
    """asyncua's server lets a session be created over a `None` channel even when it offers no such
    endpoint; the simulator's accounts refuse it (no trusted client certificate on the channel),
    the right password notwithstanding."""
    find = Client.find_endpoint

    def any_endpoint(endpoints: list[ua.EndpointDescription], mode: Any, uri: str) -> ua.EndpointDescription:
        try:
            return find(endpoints, mode, uri)
        except ua.UaError:
            return endpoints[0]

    monkeypatch.setattr(Client, "find_endpoint", staticmethod(any_endpoint))
    client = Client(plc.endpoint, timeout=2)
    client.set_user(secure.site.plcs[0].username or "")
    client.set_password(secure.site.plcs[0].resolved_password() or "")
    with pytest.raises(ua.uaerrors.BadUserAccessDenied):
        await asyncio.wait_for(client.connect(), BOUND_S)


async def test_a_refused_login_is_retried_with_the_password_file_as_it_is_then(
        secure: SecureFloor, plc: PlcSimulator, events: EventLog) -> None:
    """The link keeps trying with its back-off and reads the password file on each attempt: a
    corrected (or rotated) password brings the PLC up without a restart, and the reason clears."""
    password_file = secure.tmp / "controller-copy-of-the-password"
    password_file.write_text("guess\n")
    site = secure.plc(reconnect_max_delay_s=0.2, password_file=str(password_file))
    hub, _ = await connect(site, plc, events)
    try:
        assert "user name or password" in hub.link_errors()["plc-1"]
        password_file.write_text(secure.files.plcs["plc-1"].password.read_text())
        deadline = time.monotonic() + BOUND_S
        while not hub.connected and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert hub.connected and hub.link_errors() == {}, hub.counters
        assert hub.counters["login_refused"] >= 1
    finally:
        await hub.stop()
