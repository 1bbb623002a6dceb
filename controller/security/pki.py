"""A site's own certificate authority and the certificates it issues.

One CA per site signs the broker's server certificate, the MQTT clients' certificates (controller and
devices) and the OPC UA application instance certificates (controller and PLCs), so every peer trusts
exactly the site's CA and nothing else.

Files: the CA is `ca.crt` + `ca.key` in its directory; an issued certificate is `NAME.crt` + `NAME.key`
(PEM) or `NAME.der` + `NAME.key.der` (DER). Keys are written 0600 and never overwritten in place.
asyncua decides the encoding by the file's suffix (`.pem` is PEM, anything else DER) unless told
otherwise, so give it the DER pair, or the PEM pair with `extension="pem"`; Mosquitto and paho read PEM.

OPC UA (Part 6, Basic256Sha256) wants RSA keys of 2048-4096 bits signed with SHA-256, the application
URI as a URI in the subject alternative name, and key usage with data encipherment: `issue(...,
uri=...)` writes exactly that, with both serverAuth and clientAuth, as OPC UA applications are both.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KeyType = Literal["rsa2048", "rsa3072", "ec-p256"]
Encoding = Literal["pem", "der"]
PrivateKey = rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey

CA_CERT = "ca.crt"
CA_KEY = "ca.key"
CA_DAYS = 3650
LEAF_DAYS = 825
_BACKDATE = dt.timedelta(minutes=5)  # a peer whose clock runs a little behind still accepts a new certificate


class PkiError(Exception):
    """A CA or certificate that cannot be made or loaded. `str()` is the message for the user."""


@dataclass(frozen=True)
class CertificateAuthority:
    certificate: x509.Certificate
    key: PrivateKey
    cert_path: Path
    key_path: Path

    @property
    def name(self) -> str:
        return _common_name(self.certificate)


@dataclass(frozen=True)
class Issued:
    """A certificate signed by the site's CA, and where its files are."""

    name: str
    certificate: x509.Certificate
    cert_path: Path
    key_path: Path


def make_ca(directory: Path, name: str, *, key_type: KeyType = "rsa2048",
            days: int = CA_DAYS) -> CertificateAuthority:
    """A new self-signed CA in `directory` (ca.crt, ca.key). Refuses to replace an existing one."""
    directory = Path(directory)
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    for path in (cert_path, key_path):
        if path.exists():
            raise PkiError(f"{path} exists: load the CA with load_ca, or move it away to make a new one")
    key = _new_key(key_type)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name),
                         x509.NameAttribute(NameOID.ORGANIZATION_NAME, "floorctl site CA")])
    now = _now()
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject).issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, content_commitment=False,
                                     key_encipherment=False, data_encipherment=False, key_agreement=False,
                                     key_cert_sign=True, crl_sign=True, encipher_only=False,
                                     decipher_only=False), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    _write_key(key_path, key, "pem")
    write_file(cert_path, certificate.public_bytes(serialization.Encoding.PEM), mode=0o644)
    return CertificateAuthority(certificate, key, cert_path, key_path)


def load_ca(directory: Path) -> CertificateAuthority:
    """The CA in `directory` (ca.crt, ca.key), checked to be a CA whose key matches its certificate."""
    directory = Path(directory)
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    try:
        certificate = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except FileNotFoundError as exc:
        raise PkiError(f"no CA in {directory}: {exc.filename} is missing") from None
    except (ValueError, TypeError) as exc:
        raise PkiError(f"the CA in {directory} cannot be read: {exc}") from None
    if not isinstance(key, rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey):
        raise PkiError(f"{key_path}: unsupported key type {type(key).__name__}")
    if _public_der(key.public_key()) != _public_der(certificate.public_key()):
        raise PkiError(f"{key_path} is not the key of {cert_path}")
    try:
        constraints = certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    except x509.ExtensionNotFound:
        constraints = None
    if constraints is None or not constraints.ca:
        raise PkiError(f"{cert_path} is not a CA certificate")
    return CertificateAuthority(certificate, key, cert_path, key_path)


def ensure_ca(directory: Path, name: str, *,
              key_type: KeyType = "rsa2048") -> tuple[CertificateAuthority, bool]:
    """The CA in `directory`, made when there is none. The flag says whether it was made now."""
    if (Path(directory) / CA_CERT).exists() or (Path(directory) / CA_KEY).exists():
        return load_ca(directory), False
    return make_ca(directory, name, key_type=key_type), True


def issue(ca: CertificateAuthority, name: str, directory: Path, *, server: bool,
          hosts: Sequence[str] = (), uri: str | None = None, key_type: KeyType = "rsa2048",
          encoding: Encoding = "pem", days: int = LEAF_DAYS) -> Issued:
    """A key and a certificate for `name` (its common name and file stem), signed by `ca`.

    `server`: serverAuth, for a TLS server (the broker); otherwise clientAuth. `hosts`: DNS names and
    IP addresses the peer is reached at (subject alternative names). `uri`: an OPC UA application URI;
    the certificate is then an application instance certificate (RSA only, both EKUs).
    An existing certificate of the same name is replaced (keys are written afresh, never reused).
    """
    if not name or "/" in name or name.startswith("."):
        raise PkiError(f"not a usable certificate name: {name!r}")
    if uri is not None and not key_type.startswith("rsa"):
        raise PkiError("an OPC UA application certificate needs an RSA key (Basic256Sha256)")
    key = _new_key(key_type)
    alt_names: list[x509.GeneralName] = [_alt_name(host) for host in hosts]
    if uri is not None:
        alt_names.insert(0, x509.UniformResourceIdentifier(uri))
    usages = [ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH]
    if uri is not None:
        usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    now = _now()
    ca_ski = ca.certificate.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(key, opcua=uri is not None), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False)
    )
    if alt_names:
        builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
    certificate = builder.sign(ca.key, hashes.SHA256())
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    cert_path, key_path = paths_for(directory, name, encoding)
    _write_key(key_path, key, encoding)
    wire = serialization.Encoding.DER if encoding == "der" else serialization.Encoding.PEM
    write_file(cert_path, certificate.public_bytes(wire), mode=0o644)
    return Issued(name, certificate, cert_path, key_path)


def paths_for(directory: Path, name: str, encoding: Encoding = "pem") -> tuple[Path, Path]:
    """Where `issue` writes the certificate and key of `name`."""
    if encoding == "der":
        return directory / f"{name}.der", directory / f"{name}.key.der"
    return directory / f"{name}.crt", directory / f"{name}.key"


def load_certificate(path: Path) -> x509.Certificate:
    """A PEM or DER certificate file."""
    data = Path(path).read_bytes()
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(data)


def signed_by(certificate: x509.Certificate, ca: x509.Certificate) -> bool:
    """Whether `ca` issued `certificate` (issuer name and signature; not a full path validation)."""
    if certificate.issuer != ca.subject:
        return False
    try:
        certificate.verify_directly_issued_by(ca)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def _new_key(key_type: KeyType) -> PrivateKey:
    if key_type == "rsa2048":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if key_type == "rsa3072":
        return rsa.generate_private_key(public_exponent=65537, key_size=3072)
    if key_type == "ec-p256":
        return ec.generate_private_key(ec.SECP256R1())
    raise PkiError(f"unknown key type {key_type!r}: rsa2048, rsa3072 or ec-p256")


def _key_usage(key: PrivateKey, *, opcua: bool) -> x509.KeyUsage:
    is_rsa = isinstance(key, rsa.RSAPrivateKey)
    return x509.KeyUsage(digital_signature=True, content_commitment=opcua, key_encipherment=is_rsa,
                         data_encipherment=opcua, key_agreement=not is_rsa, key_cert_sign=False,
                         crl_sign=False, encipher_only=False, decipher_only=False)


def _alt_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        pass
    if not host or any(c.isspace() for c in host):
        raise PkiError(f"not a host name or address: {host!r}")
    return x509.DNSName(host)


def _write_key(path: Path, key: PrivateKey, encoding: Encoding) -> None:
    data = key.private_bytes(
        serialization.Encoding.DER if encoding == "der" else serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    write_file(path, data, mode=0o600)


def write_file(path: Path, data: bytes, *, mode: int = 0o600) -> None:
    """Write through a new file created with `mode` (a key is never readable by others, not even
    for a moment), then rename it over `path`."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    try:
        with os.fdopen(fd, "wb") as out:
            out.write(data)
        os.chmod(tmp, mode)  # the umask may have taken bits off a certificate's 0644
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def _public_der(public_key: object) -> bytes:
    return public_key.public_bytes(serialization.Encoding.DER,  # type: ignore[attr-defined]
                                   serialization.PublicFormat.SubjectPublicKeyInfo)


def _common_name(certificate: x509.Certificate) -> str:
    names = certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(names[0].value) if names else certificate.subject.rfc4514_string()


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)
