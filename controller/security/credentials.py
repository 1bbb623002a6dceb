"""`floorctl credentials`: every file a site needs to run its broker securely, in one directory.

    DIR/ca.crt, ca.key              the site's CA (made once, then reused)
    DIR/broker.crt, broker.key      the broker's TLS server certificate
    DIR/passwd                      the broker's accounts, hashed
    DIR/acl                         what each account may publish and subscribe to
    DIR/secrets/NAME.password       each account's password in clear, 0600, for the site file to name
    DIR/clients/NAME.crt, NAME.key  each account's TLS client certificate
    DIR/mosquitto.conf              config/mosquitto-secure.conf with its paths pointing into DIR
    DIR/opcua/...                   OPC UA certificates, trust lists, PLC passwords (opcua_certs.py)

NAME is the controller's user name or an MQTT device's id. Running it again keeps what is there and
still valid (passwords, certificates), adds what the site gained, and drops accounts the site lost;
`rotate=True` replaces every password and certificate but keeps the CA.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509

from controller.config_files import config_file
from controller.security import pki
from controller.security.mqtt_accounts import (
    SiteAccounts,
    acl_text,
    new_password,
    site_accounts,
    write_password_file,
)
from controller.security.opcua_certs import site_file_gaps as opcua_site_file_gaps
from controller.security.opcua_certs import write_opcua_credentials
from controller.site import Site, parse_broker_url

INSTALL_DIR = "/etc/mosquitto/floorctl"
"""Where config/mosquitto-secure.conf expects the files of DIR."""
BROKER_CERT = "broker"
RENEW_BEFORE = dt.timedelta(days=30)
DEFAULT_BROKER_HOSTS = ("localhost", "127.0.0.1", "::1")


@dataclass(frozen=True)
class Layout:
    """Where the files of one credentials directory are."""

    root: Path

    @property
    def passwd(self) -> Path:
        return self.root / "passwd"

    @property
    def acl(self) -> Path:
        return self.root / "acl"

    @property
    def ca_cert(self) -> Path:
        return self.root / pki.CA_CERT

    @property
    def secrets(self) -> Path:
        return self.root / "secrets"

    @property
    def clients(self) -> Path:
        return self.root / "clients"

    @property
    def conf(self) -> Path:
        return self.root / "mosquitto.conf"

    def password_file(self, account: str) -> Path:
        return self.secrets / f"{account}.password"


@dataclass
class Report:
    """What `write_credentials` did, line by line, for the command to print."""

    written: list[tuple[Path, str]] = field(default_factory=list)
    kept: list[tuple[Path, str]] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)
    accounts: SiteAccounts | None = None

    @property
    def controller(self) -> str:
        assert self.accounts is not None
        return self.accounts.controller


def broker_conf(root: Path, *, listener: str | None = None, extra: Sequence[str] = ()) -> str:
    """config/mosquitto-secure.conf with its paths in `root`; `listener` replaces its listener line
    (e.g. `8884 127.0.0.1`)."""
    text = config_file("mosquitto-secure.conf").read_text(encoding="utf-8")
    text = text.replace(f"{INSTALL_DIR}/", f"{root.resolve()}/")
    if listener is not None:
        text, count = re.subn(r"^listener .*$", f"listener {listener}", text, count=1, flags=re.MULTILINE)
        assert count == 1, "mosquitto-secure.conf has no listener line"
    return text + "".join(f"{line}\n" for line in extra)


def write_credentials(site: Site, out: Path, *, broker_hosts: Sequence[str] = (),
                      rotate: bool = False) -> Report:
    """Write (or bring up to date) the site's broker credentials in `out`. Raises AccountError,
    PkiError or OSError with a message for the user."""
    layout = Layout(Path(out))
    report = Report(accounts=site_accounts(site))
    accounts = report.accounts
    assert accounts is not None
    layout.root.mkdir(parents=True, exist_ok=True)
    os.chmod(layout.root, 0o700)
    ignore = layout.root / ".gitignore"
    if not ignore.exists():
        ignore.write_text("# Secrets: never commit this directory.\n*\n", encoding="utf-8")

    ca, made = pki.ensure_ca(layout.root, f"floorctl {site.site} CA")
    (report.written if made else report.kept).append((ca.cert_path, "the site's CA (its key: ca.key)"))

    host, _, _ = parse_broker_url(site.broker.url)
    hosts = list(dict.fromkeys([*broker_hosts, host, *DEFAULT_BROKER_HOSTS]))
    _certificate(ca, BROKER_CERT, layout.root, server=True, hosts=hosts, rotate=rotate, report=report,
                 what=f"the broker's TLS certificate for {', '.join(hosts)}")

    passwords: dict[str, str] = {}
    layout.secrets.mkdir(mode=0o700, exist_ok=True)
    for name in accounts.names:
        path = layout.password_file(name)
        existing = None if rotate else _read_password(path)
        passwords[name] = existing or new_password()
        if existing:
            report.kept.append((path, f"password of {name}"))
        else:
            pki.write_file(path, f"{passwords[name]}\n".encode(), mode=0o600)
            report.written.append((path, f"password of {name}"))
        _certificate(ca, name, layout.clients, server=False, hosts=(), rotate=rotate, report=report,
                     what=f"TLS client certificate of {name}")
    report.removed += _drop_stale(layout, set(accounts.names))

    how = write_password_file(layout.passwd, passwords)
    report.written.append((layout.passwd, f"{len(passwords)} broker accounts, {how}"))
    layout.acl.write_text(acl_text(site, accounts), encoding="utf-8")
    report.written.append((layout.acl, "the ACL"))
    layout.conf.write_text(broker_conf(layout.root), encoding="utf-8")
    report.written.append((layout.conf, "config/mosquitto-secure.conf with its paths in this directory"))
    opcua = write_opcua_credentials(site, ca, layout.root, rotate=rotate)
    report.written += opcua.written
    report.kept += opcua.kept
    report.removed += opcua.removed
    return report


def _certificate(ca: pki.CertificateAuthority, name: str, directory: Path, *, server: bool,
                 hosts: Sequence[str], rotate: bool, report: Report, what: str) -> None:
    cert_path, key_path = pki.paths_for(directory, name)
    if not rotate and key_path.exists() and _still_good(cert_path, ca, hosts):
        report.kept.append((cert_path, what))
        return
    issued = pki.issue(ca, name, directory, server=server, hosts=hosts)
    report.written.append((issued.cert_path, what))


def _still_good(cert_path: Path, ca: pki.CertificateAuthority, hosts: Sequence[str]) -> bool:
    """Signed by this CA, valid for a while yet, and naming every host asked for."""
    try:
        cert = pki.load_certificate(cert_path)
    except (OSError, ValueError):
        return False
    if not pki.signed_by(cert, ca.certificate):
        return False
    if cert.not_valid_after_utc - dt.datetime.now(dt.UTC) < RENEW_BEFORE:
        return False
    if hosts:
        try:
            san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        except x509.ExtensionNotFound:
            return False
        named = {str(v) for v in san.get_values_for_type(x509.DNSName)}
        named |= {str(v) for v in san.get_values_for_type(x509.IPAddress)}
        if not {str(_normal(h)) for h in hosts} <= named:
            return False
    return True


def _normal(host: str) -> object:
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        return host


def _read_password(path: Path) -> str | None:
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return None
    return lines[0] if lines and lines[0] else None


def _drop_stale(layout: Layout, names: set[str]) -> list[Path]:
    """The secrets and client certificates of accounts the site no longer has."""
    removed: list[Path] = []
    for directory, suffixes in ((layout.secrets, (".password",)), (layout.clients, (".crt", ".key"))):
        if not directory.is_dir():
            continue
        for path in sorted(directory.iterdir()):
            suffix = next((s for s in suffixes if path.name.endswith(s)), None)
            if suffix is not None and path.name[: -len(suffix)] not in names:
                path.unlink()
                removed.append(path)
    return removed


def site_file_gaps(site: Site, out: Path) -> list[str]:
    """Where the site file's broker section does not name the files of `out` (for the report)."""
    layout = Layout(Path(out))
    broker = site.broker
    controller = site_accounts(site).controller
    gaps: list[str] = []

    def expect(key: str, value: str | None, path: Path) -> None:
        if value is None or Path(value).resolve() != path.resolve():
            gaps.append(f"broker.{key}: {path}" + (f" (it says {value})" if value else ""))

    if not parse_broker_url(broker.url)[2]:
        gaps.append(f"broker.url: mqtts://HOST:8883 (it says {broker.url})")
    if broker.username is None:
        gaps.append(f"broker.username: {controller}")
    if broker.password_env is None:
        expect("password_file", broker.password_file, layout.password_file(controller))
    tls = broker.tls
    expect("tls.ca_file", tls.ca_file if tls else None, layout.ca_cert)
    cert, key = pki.paths_for(layout.clients, controller)
    expect("tls.cert_file", tls.cert_file if tls else None, cert)
    expect("tls.key_file", tls.key_file if tls else None, key)
    if broker.simulators is not None:
        expect("simulators.secrets_dir", broker.simulators.secrets_dir, layout.secrets)
        expect("simulators.certs_dir", broker.simulators.certs_dir, layout.clients)
    return gaps + opcua_site_file_gaps(site, out)
