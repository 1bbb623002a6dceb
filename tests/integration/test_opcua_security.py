"""OPC UA security without a network: whom a trust list trusts, the simulated PLC's accounts, the
site file's keys, the credentials `floorctl credentials` writes, and a refused PLC's reason on the
health report and its alarm."""

from __future__ import annotations

import datetime as dt
import stat
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization

from controller.engine.alarms import FloorConditions
from controller.engine.devices import FloorDevices
from controller.ports import Device, EventSink
from controller.security.opcua_certs import application_uri, write_opcua_credentials
from controller.security.opcua_trust import TrustList, Untrusted
from controller.security.pki import CertificateAuthority, Issued, issue, load_certificate, make_ca
from controller.site import PlcSpec, Site, SiteError
from simulators.plc.uaserver import PlcAccounts

URI = "urn:floorctl:demo:opcua:plc-1"


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> tuple[CertificateAuthority, Issued, Path]:
    tmp = tmp_path_factory.mktemp("pki")
    ca = make_ca(tmp / "ca", "site CA")
    plc = issue(ca, "plc-1", tmp / "plc-1", server=True, hosts=["plc-1.floor", "10.0.0.7"], uri=URI,
                encoding="der")
    return ca, plc, tmp


def der(issued: Issued) -> bytes:
    return issued.certificate.public_bytes(serialization.Encoding.DER)


def test_a_certificate_the_site_ca_signed_is_trusted_for_its_uri_and_hosts(pki: Any) -> None:
    ca, plc, _ = pki
    trust = TrustList.load([ca.cert_path])
    trust.check(plc.certificate, uri=URI, host="plc-1.floor")
    trust.check(plc.certificate, uri=URI, host="10.0.0.7")
    with pytest.raises(Untrusted, match="does not name host '10.0.0.8'"):
        trust.check(plc.certificate, uri=URI, host="10.0.0.8")
    with pytest.raises(Untrusted, match="is not for application 'urn:other'"):
        trust.check(plc.certificate, uri="urn:other")


def test_a_pinned_certificate_is_trusted_as_it_is_and_nothing_else(pki: Any) -> None:
    ca, plc, tmp = pki
    pinned = TrustList.load([plc.cert_path])
    pinned.check(plc.certificate, uri=URI, host="anywhere")  # pinned: the host is not asked
    sibling = issue(ca, "plc-2", tmp / "plc-2", server=True, hosts=["10.0.0.7"], uri=URI, encoding="der")
    with pytest.raises(Untrusted, match="neither pinned nor signed by a CA in the trust list"):
        pinned.check(sibling.certificate)
    assert not pinned.trusts(der(sibling)) and pinned.trusts(der(plc)) and not pinned.trusts(None)


def test_another_ca_an_expired_certificate_and_an_empty_list_are_refused(pki: Any) -> None:
    ca, plc, tmp = pki
    other = make_ca(tmp / "other", "other CA")
    with pytest.raises(Untrusted, match="'plc-1' issued by 'site CA' is neither pinned"):
        TrustList.load([other.cert_path]).check(plc.certificate)
    later = plc.certificate.not_valid_after_utc + dt.timedelta(days=1)
    with pytest.raises(Untrusted, match="is valid from"):
        TrustList.load([ca.cert_path]).check(plc.certificate, now=later)
    (tmp / "empty").mkdir(exist_ok=True)
    with pytest.raises(Untrusted):
        TrustList.load([tmp / "empty"]).check(plc.certificate)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        TrustList.load([tmp / "typo"])


def test_the_simulated_plc_takes_its_one_account_over_a_trusted_channel_only(pki: Any) -> None:
    ca, plc, _ = pki
    accounts = PlcAccounts("wcs", "s3cret", TrustList.load([ca.cert_path]))
    channel = der(plc)
    assert accounts.get_user(None, username="wcs", password="s3cret", certificate=channel) is not None
    assert accounts.get_user(None, username="wcs", password="guess", certificate=channel) is None
    assert accounts.get_user(None, certificate=channel) is None  # anonymous
    assert accounts.get_user(None, username="admin", password="s3cret", certificate=channel) is None
    assert accounts.get_user(None, username="wcs", password="s3cret", certificate=None) is None
    open_plc = PlcAccounts(None, None)  # no account in the site file: anonymous only
    assert open_plc.get_user(None) is not None
    assert open_plc.get_user(None, username="admin", password="x") is None


def plc_entry(**changes: Any) -> dict[str, Any]:
    return {"id": "plc-1", "endpoint": "opc.tcp://127.0.0.1:4840", **changes}


def test_a_security_policy_needs_a_pinned_certificate_or_a_trust_list() -> None:
    secure = {"policy": "Basic256Sha256", "mode": "SignAndEncrypt", "certificate": "c.der",
              "private_key": "k.der"}
    with pytest.raises(ValueError, match="no certificate is trusted on first use"):
        PlcSpec.model_validate(plc_entry(security=secure))
    assert PlcSpec.model_validate(plc_entry(security={**secure, "trust": "trust/"})).security.trusted() == [
        "trust/"]
    with pytest.raises(ValueError, match="give one of password, password_file"):
        PlcSpec.model_validate(plc_entry(username="u", password="p", password_file="f"))
    with pytest.raises(ValueError, match="password_env needs username"):
        PlcSpec.model_validate(plc_entry(password_env="PLC_PASSWORD"))


def test_a_plc_password_is_read_when_asked_and_a_missing_one_names_its_key(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    missing = PlcSpec.model_validate(plc_entry(username="u", password_file=str(tmp_path / "nope")))
    with pytest.raises(SiteError, match="plcs.plc-1.password_file: cannot read"):
        missing.resolved_password()
    (tmp_path / "pw").write_text("from-file\n")
    assert PlcSpec.model_validate(plc_entry(username="u", password_file=str(tmp_path / "pw"))
                                  ).resolved_password() == "from-file"
    monkeypatch.setenv("PLC_PASSWORD", "from-env")
    assert PlcSpec.model_validate(plc_entry(username="u", password_env="PLC_PASSWORD")
                                  ).resolved_password() == "from-env"


def test_the_credentials_give_each_side_its_certificate_trust_list_and_each_plc_a_password(
        demo_site: Site, tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "ca", "site CA")
    files = write_opcua_credentials(demo_site, ca, tmp_path)
    controller, plc = load_certificate(files.controller), files.plcs["plc-1"]
    plc_certificate = load_certificate(plc.issued)
    TrustList.load([files.controller_trust]).check(plc_certificate, uri=application_uri(demo_site, "plc-1"),
                                                   host="127.0.0.1")
    TrustList.load([plc.trust]).check(controller, uri=application_uri(demo_site, "controller"))
    with pytest.raises(Untrusted):  # a PLC trusts the controller, not every certificate of the CA
        TrustList.load([plc.trust]).check(plc_certificate)
    for secret in (plc.password, plc.key, files.controller_key):
        assert stat.S_IMODE(secret.stat().st_mode) == 0o600, secret
    password = plc.password.read_text()

    again = write_opcua_credentials(demo_site, ca, tmp_path)  # what is still good is kept
    assert again.plcs["plc-1"].password.read_text() == password
    assert load_certificate(again.controller) == controller
    assert {path for path, _ in again.kept} >= {files.controller, plc.issued, plc.password}

    rotated = write_opcua_credentials(demo_site, ca, tmp_path, rotate=True)
    assert rotated.plcs["plc-1"].password.read_text() != password
    assert load_certificate(rotated.controller) != controller
    assert load_certificate(rotated.plcs["plc-1"].trust / "controller.der") == load_certificate(
        rotated.controller)  # the PLC trusts the new one

    renamed = demo_site.plcs[0].model_copy(update={"id": "plc-9"})
    one_plc_less = demo_site.model_copy(update={"plcs": [renamed]})
    assert write_opcua_credentials(one_plc_less, ca, tmp_path).removed == [tmp_path / "opcua" / "plc-1"]


class RefusedPlcs:
    """A hub whose PLC link was refused, as the OPC UA hub reports it."""

    name = "opcua"
    connected = False

    def __init__(self) -> None:
        self.counters: Counter[str] = Counter()

    async def start(self, sink: EventSink) -> None: ...

    async def stop(self) -> None: ...

    def devices(self) -> list[Device]:
        return []

    def link_errors(self) -> dict[str, str]:
        return {"plc-1": "the PLC refused the user name or password (BadUserAccessDenied)"}


async def test_a_refused_plc_says_why_on_the_health_report_and_in_its_alarm(demo_site: Site) -> None:
    floor = FloorDevices(demo_site, [RefusedPlcs()], timing=lambda row: None, on_finished=lambda d, t: None)
    assert floor.plc_errors() == {"plc-1": "the PLC refused the user name or password (BadUserAccessDenied)"}
    health = {"ok": False, "broker": True, "plcs": {"plc-1": False}, "plc_errors": floor.plc_errors(),
              "faults": {}, "writer_backlog": 0}
    (alarm,) = FloorConditions(demo_site, demo_site.alarms).evaluate([], health, [], 0.0)
    assert alarm.text == ("PLC plc-1 is unreachable (the PLC refused the user name or password "
                          "(BadUserAccessDenied)): its conveyors and sorters get no commands")
