"""The OPC UA part of a site's credentials: application instance certificates signed by the site's
CA for the controller (the client) and each PLC (a server), a trust list per side and an account per PLC.

Under `OUT/opcua/`:

    controller/controller.der, controller.key.der   the controller's certificate and key
    controller/trust/site-ca.crt                    the controller trusts PLCs the site's CA signed
    PLC/PLC.der, PLC.key.der                        the PLC's certificate (its endpoint's host, its URI)
    PLC/trust/controller.der                        the PLC trusts the controller's certificate only
    PLC/password                                    the password of the PLC's account (0600); the
                                                    user name is the site file's (default floorctl)

A PLC trusts the controller's own certificate, not the CA: the CA also signed every other PLC's
certificate (OPC UA application certificates carry both server and client use), and one PLC must not
be able to open a session on another. Running it again keeps the certificates that are still good
(this CA, this URI and host, not expiring within 30 days) and the passwords, adds what the site
gained and drops the PLCs it lost; `rotate` makes every certificate and password afresh.
"""

from __future__ import annotations

import datetime as dt
import secrets
import shutil
import socket
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization

from controller.security.opcua_trust import TrustList, Untrusted
from controller.security.pki import CertificateAuthority, issue, load_certificate, paths_for, write_file
from controller.site import Site

CONTROLLER = "controller"
PLC_USERNAME = "floorctl"
RENEW_BEFORE = dt.timedelta(days=30)


def application_uri(site: Site, name: str) -> str:
    """The application URI of the controller or of a PLC of the site, as written in its certificate."""
    return f"urn:floorctl:{site.site}:opcua:{name}"


Row = tuple[Path, str]


@dataclass(frozen=True)
class PlcFiles:
    issued: Path  # the certificate; its key is next to it (pki.paths_for)
    key: Path
    trust: Path
    username: str
    password: Path


@dataclass
class OpcUaFiles:
    """What `write_opcua_credentials` wrote and kept, for the command's report and the site file."""

    controller: Path
    controller_key: Path
    controller_trust: Path
    plcs: dict[str, PlcFiles] = field(default_factory=dict)
    written: list[Row] = field(default_factory=list)
    kept: list[Row] = field(default_factory=list)
    removed: list[Path] = field(default_factory=list)


def write_opcua_credentials(site: Site, ca: CertificateAuthority, out: Path, *,
                            rotate: bool = False) -> OpcUaFiles:
    root = Path(out) / "opcua"
    here = root / CONTROLLER
    files = OpcUaFiles(*paths_for(here, CONTROLLER, "der"), here / "trust")
    _certificate(files, ca, CONTROLLER, here, server=False, hosts=[socket.gethostname()], rotate=rotate,
                 uri=application_uri(site, CONTROLLER), what="the controller's OPC UA certificate")
    ca_pem = ca.certificate.public_bytes(serialization.Encoding.PEM)
    _trust_only(files.controller_trust / "site-ca.crt", ca_pem)
    files.written.append((files.controller_trust, "the controller's OPC UA trust list: the site's CA"))
    for plc in site.plcs:
        directory = root / plc.id
        host = urlsplit(plc.endpoint).hostname or "localhost"
        cert, key = _certificate(files, ca, plc.id, directory, server=True, hosts=[host], rotate=rotate,
                                 uri=application_uri(site, plc.id), what=f"PLC {plc.id}'s OPC UA certificate")
        trust = directory / "trust"
        _trust_only(trust / f"{CONTROLLER}.der", files.controller.read_bytes())
        files.written.append((trust, f"PLC {plc.id}'s trust list: the controller's certificate"))
        password = directory / "password"
        if password.exists() and not rotate:
            files.kept.append((password, f"password of PLC {plc.id}'s account"))
        else:
            write_file(password, f"{secrets.token_urlsafe(24)}\n".encode(), mode=0o600)
            files.written.append((password, f"password of PLC {plc.id}'s account"))
        files.plcs[plc.id] = PlcFiles(cert, key, trust, plc.username or PLC_USERNAME, password)
    files.removed = _drop_stale(root, {CONTROLLER, *(plc.id for plc in site.plcs)})
    return files


def site_file_gaps(site: Site, out: Path) -> list[str]:
    """Where the site file's plcs do not use the OPC UA files of `out` (for the command's report)."""
    root = Path(out) / "opcua"
    cert, key = paths_for(root / CONTROLLER, CONTROLLER, "der")
    gaps: list[str] = []

    def expect(key_path: str, value: str | None, path: Path) -> None:
        if value is None or Path(value).resolve() != path.resolve():
            gaps.append(f"{key_path}: {path}" + (f" (it says {value})" if value else ""))

    for plc in site.plcs:
        at = f"plcs.{plc.id}"
        security = plc.security
        if security.policy == "None":
            gaps.append(f"{at}.security: policy Basic256Sha256, mode SignAndEncrypt (it says None)")
        expect(f"{at}.security.certificate", security.certificate, cert)
        expect(f"{at}.security.private_key", security.private_key, key)
        if security.server_certificate is None:
            expect(f"{at}.security.trust", security.trust, root / CONTROLLER / "trust")
        if plc.username is None:
            gaps.append(f"{at}.username: {PLC_USERNAME}")
        if plc.password_env is None:
            expect(f"{at}.password_file", plc.password_file, root / plc.id / "password")
    return gaps


def _certificate(files: OpcUaFiles, ca: CertificateAuthority, name: str, directory: Path, *, server: bool,
                 hosts: list[str], uri: str, rotate: bool, what: str) -> tuple[Path, Path]:
    """The certificate and key of `name`, kept when still good, else issued afresh (and reported)."""
    cert_path, key_path = paths_for(directory, name, "der")
    if not rotate and key_path.exists() and _still_good(cert_path, ca, uri, hosts):
        files.kept.append((cert_path, what))
    else:
        issue(ca, name, directory, server=server, hosts=hosts, uri=uri, encoding="der")
        files.written.append((cert_path, what))
    return cert_path, key_path


def _still_good(cert_path: Path, ca: CertificateAuthority, uri: str, hosts: list[str]) -> bool:
    """Signed by this CA, for this URI and these hosts, and not expiring within RENEW_BEFORE."""
    try:
        certificate = load_certificate(cert_path)
        site_ca = TrustList((ca.certificate,), str(ca.cert_path))
        for host in hosts:
            site_ca.check(certificate, uri=uri, host=host, now=dt.datetime.now(dt.UTC) + RENEW_BEFORE)
    except (OSError, ValueError, Untrusted):
        return False
    return True


def _trust_only(path: Path, data: bytes) -> None:
    """`path` becomes the one certificate of its trust list directory."""
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.iterdir():
        if stale.is_file() and stale != path:
            stale.unlink()
    write_file(path, data, mode=0o644)


def _drop_stale(root: Path, names: set[str]) -> list[Path]:
    """The directories of PLCs the site no longer has."""
    removed: list[Path] = []
    for directory in sorted(root.iterdir()) if root.is_dir() else []:
        if directory.is_dir() and directory.name not in names:
            shutil.rmtree(directory)
            removed.append(directory)
    return removed
