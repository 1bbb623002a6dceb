"""The site's CA and the certificates it issues, checked with cryptography's own path validation."""

from __future__ import annotations

import ipaddress
import stat
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from controller.security.pki import (
    PkiError,
    ensure_ca,
    issue,
    load_ca,
    load_certificate,
    make_ca,
    signed_by,
)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_ca_files_and_key_mode(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "pki", "Site CA")
    assert ca.cert_path.name == "ca.crt" and ca.key_path.name == "ca.key"
    assert _mode(ca.key_path) == 0o600
    assert ca.name == "Site CA"
    constraints = ca.certificate.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca
    assert signed_by(ca.certificate, ca.certificate)


def test_make_ca_never_replaces_one(tmp_path: Path) -> None:
    make_ca(tmp_path, "Site CA")
    with pytest.raises(PkiError, match="exists"):
        make_ca(tmp_path, "Another CA")


def test_load_and_ensure_reuse_the_same_ca(tmp_path: Path) -> None:
    made = make_ca(tmp_path, "Site CA")
    loaded = load_ca(tmp_path)
    assert loaded.certificate == made.certificate
    again, created = ensure_ca(tmp_path, "ignored")
    assert not created and again.certificate == made.certificate
    fresh, created = ensure_ca(tmp_path / "other", "Other CA")
    assert created and fresh.certificate != made.certificate


def test_load_ca_refuses_a_mismatched_key_or_missing_files(tmp_path: Path) -> None:
    with pytest.raises(PkiError, match="no CA"):
        load_ca(tmp_path)
    make_ca(tmp_path / "a", "A")
    make_ca(tmp_path / "b", "B")
    (tmp_path / "a" / "ca.key").write_bytes((tmp_path / "b" / "ca.key").read_bytes())
    with pytest.raises(PkiError, match="not the key"):
        load_ca(tmp_path / "a")


def test_server_certificate_verifies_for_its_hosts(tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "Site CA")
    broker = issue(ca, "broker", tmp_path / "certs", server=True, hosts=["broker.floor.local", "127.0.0.1"])
    assert _mode(broker.key_path) == 0o600
    leaf = load_certificate(broker.cert_path)
    store = Store([ca.certificate])
    verifier = PolicyBuilder().store(store).build_server_verifier(x509.DNSName("broker.floor.local"))
    chain = verifier.verify(leaf, [])
    assert chain[-1] == ca.certificate
    loopback = x509.IPAddress(ipaddress.ip_address("127.0.0.1"))
    by_ip = PolicyBuilder().store(store).build_server_verifier(loopback)
    by_ip.verify(leaf, [])
    with pytest.raises(VerificationError):
        PolicyBuilder().store(store).build_server_verifier(x509.DNSName("elsewhere.local")).verify(leaf, [])
    eku = leaf.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.SERVER_AUTH]


def test_client_certificate_verifies_and_another_ca_does_not(tmp_path: Path) -> None:
    ca = make_ca(tmp_path / "site", "Site CA")
    other = make_ca(tmp_path / "other", "Other CA")
    device = issue(ca, "pl-01", tmp_path / "certs", server=False, hosts=["pl-01.floor.local"])
    stranger = issue(other, "pl-01", tmp_path / "stranger", server=False, hosts=["pl-01.floor.local"])
    eku = device.certificate.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(eku) == [ExtendedKeyUsageOID.CLIENT_AUTH]
    verifier = PolicyBuilder().store(Store([ca.certificate])).build_client_verifier()
    verifier.verify(device.certificate, [])
    with pytest.raises(VerificationError):
        verifier.verify(stranger.certificate, [])
    assert signed_by(device.certificate, ca.certificate)
    assert not signed_by(stranger.certificate, ca.certificate)


def test_opcua_application_certificate(tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "Site CA")
    app = issue(ca, "plc-1", tmp_path / "opcua", server=True, hosts=["plc-1.floor.local"],
                uri="urn:floorctl:plc-1", encoding="der")
    assert app.cert_path.name == "plc-1.der" and app.key_path.name == "plc-1.key.der"
    assert _mode(app.key_path) == 0o600
    cert = x509.load_der_x509_certificate(app.cert_path.read_bytes())
    assert cert == app.certificate == load_certificate(app.cert_path)
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.UniformResourceIdentifier) == ["urn:floorctl:plc-1"]
    assert san.get_values_for_type(x509.DNSName) == ["plc-1.floor.local"]
    public = cert.public_key()
    assert isinstance(public, rsa.RSAPublicKey) and public.key_size == 2048
    assert cert.signature_hash_algorithm is not None and cert.signature_hash_algorithm.name == "sha256"
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.digital_signature and usage.key_encipherment and usage.data_encipherment
    assert usage.content_commitment
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert set(eku) == {ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH}
    PolicyBuilder().store(Store([ca.certificate])).build_server_verifier(
        x509.DNSName("plc-1.floor.local")).verify(cert, [])


def test_asyncua_reads_the_der_pair(tmp_path: Path) -> None:
    import asyncio

    from asyncua.crypto import uacrypto

    ca = make_ca(tmp_path, "Site CA")
    app = issue(ca, "controller", tmp_path, server=False, uri="urn:floorctl:controller", encoding="der")

    async def load() -> None:
        cert = await uacrypto.load_certificate(app.cert_path)
        key = await uacrypto.load_private_key(app.key_path)
        assert cert == app.certificate
        assert key.public_key().public_numbers() == cert.public_key().public_numbers()
        pem_cert = issue(ca, "controller-pem", tmp_path, server=False, uri="urn:floorctl:controller")
        assert await uacrypto.load_certificate(pem_cert.cert_path, "pem") == pem_cert.certificate

    asyncio.run(load())


def test_ec_keys_for_mqtt_and_refused_for_opcua(tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "Site CA")
    device = issue(ca, "pl-02", tmp_path, server=False, hosts=["pl-02.floor.local"], key_type="ec-p256")
    PolicyBuilder().store(Store([ca.certificate])).build_client_verifier().verify(device.certificate, [])
    with pytest.raises(PkiError, match="RSA"):
        issue(ca, "plc", tmp_path, server=True, uri="urn:x", key_type="ec-p256")


def test_bad_names_and_hosts(tmp_path: Path) -> None:
    ca = make_ca(tmp_path, "Site CA")
    with pytest.raises(PkiError):
        issue(ca, "../escape", tmp_path, server=False)
    with pytest.raises(PkiError):
        issue(ca, "ok", tmp_path, server=True, hosts=["bad host"])
