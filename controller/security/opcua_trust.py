"""Whom an OPC UA side trusts: its trust list, certificates in files or a directory.

A peer's certificate is trusted when it is one of the list's certificates itself (pinned), or when a
CA certificate of the list signed it; either way only within its validity dates, and only for the
application URI it names. A CA-signed server certificate must also name the host the client dialled.
Nothing is trusted on first use: an empty or missing list trusts nobody.

Both sides use it: the controller checks the PLC's certificate before it sends anything (and again
when the session is created), the PLC simulator checks the controller's when a session is created
and again when it logs in.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from asyncua import ua
from asyncua.common.utils import ServiceError
from cryptography import x509
from cryptography.x509.oid import NameOID

from controller.security.pki import load_certificate, signed_by

CERTIFICATE_SUFFIXES = (".der", ".pem", ".crt", ".cer")


class Untrusted(Exception):
    """A peer certificate this side does not trust. `str()` says why; `status` is the OPC UA code."""

    def __init__(self, reason: str, status: int = ua.StatusCodes.BadCertificateUntrusted) -> None:
        super().__init__(reason)
        self.status = status


@dataclass(frozen=True)
class TrustList:
    certificates: tuple[x509.Certificate, ...]
    source: str  # where they were read from, for messages

    @classmethod
    def load(cls, locations: Iterable[str | Path]) -> TrustList:
        """Every certificate in the given files and directories (*.der, *.pem, *.crt, *.cer).
        A location that does not exist is an error, not an empty list: a typo must not look like a
        list that trusts nobody for no reason."""
        certificates: list[x509.Certificate] = []
        names: list[str] = []
        for location in map(Path, locations):
            names.append(str(location))
            if location.is_dir():
                files = sorted(p for p in location.iterdir() if p.suffix.lower() in CERTIFICATE_SUFFIXES
                               and not p.name.endswith((".key.der", ".key.pem")))
            elif location.is_file():
                files = [location]
            else:
                raise FileNotFoundError(f"trust list {location} does not exist")
            for file in files:
                try:
                    certificates.append(load_certificate(file))
                except ValueError as exc:
                    raise ValueError(f"trust list: {file} is not a certificate: {exc}") from None
        return cls(tuple(certificates), ", ".join(names) or "(none)")

    def check(self, certificate: x509.Certificate, *, uri: str | None = None, host: str | None = None,
              now: dt.datetime | None = None) -> None:
        """Raise Untrusted unless the certificate is trusted for the application `uri` it is
        presented for and, when it is CA-signed, for `host` (the address the client dialled)."""
        now = now or dt.datetime.now(dt.UTC)
        who = describe(certificate)
        if not certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc:
            raise Untrusted(f"certificate {who} is valid from {certificate.not_valid_before_utc:%Y-%m-%d} "
                            f"to {certificate.not_valid_after_utc:%Y-%m-%d} only",
                            ua.StatusCodes.BadCertificateTimeInvalid)
        pinned = certificate in self.certificates
        if not pinned and not any(_is_ca(ca, now) and signed_by(certificate, ca) for ca in self.certificates):
            raise Untrusted(f"certificate {who} is neither pinned nor signed by a CA in the trust list "
                            f"({self.source})")
        names = _alt_names(certificate)
        if uri is not None and uri not in names.get_values_for_type(x509.UniformResourceIdentifier):
            raise Untrusted(f"certificate {who} is not for application {uri!r}",
                            ua.StatusCodes.BadCertificateUriInvalid)
        if host is not None and not pinned and not _names_host(names, host):
            raise Untrusted(f"certificate {who} does not name host {host!r}",
                            ua.StatusCodes.BadCertificateHostNameInvalid)

    async def validate(self, certificate: x509.Certificate, description: ua.ApplicationDescription) -> None:
        """asyncua's certificate validator hook (`Server.set_certificate_validator`): a refusal is
        the ServiceError that goes back to the peer with its status code."""
        try:
            self.check(certificate, uri=description.ApplicationUri)
        except Untrusted as exc:
            raise ServiceError(exc.status) from exc

    def trusts(self, der: bytes | None, *, uri: str | None = None) -> bool:
        if not der:
            return False
        try:
            self.check(x509.load_der_x509_certificate(der), uri=uri)
        except (Untrusted, ValueError):
            return False
        return True


def describe(certificate: x509.Certificate) -> str:
    """'CN' issued by 'CN', for messages."""
    return f"{_common_name(certificate.subject)!r} issued by {_common_name(certificate.issuer)!r}"


def certificate_uri(certificate: x509.Certificate) -> str | None:
    """The application URI in a certificate's subject alternative name, if any."""
    uris = _alt_names(certificate).get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


def _alt_names(certificate: x509.Certificate) -> x509.SubjectAlternativeName:
    try:
        return certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return x509.SubjectAlternativeName([])


def _names_host(names: x509.SubjectAlternativeName, host: str) -> bool:
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        wanted = host.lower().rstrip(".")
        return wanted in (name.lower().rstrip(".") for name in names.get_values_for_type(x509.DNSName))
    return address in names.get_values_for_type(x509.IPAddress)


def _is_ca(certificate: x509.Certificate, now: dt.datetime) -> bool:
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        return False
    return constraints.ca and certificate.not_valid_before_utc <= now <= certificate.not_valid_after_utc


def _common_name(name: x509.Name) -> str:
    names = name.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else name.rfc4514_string()
