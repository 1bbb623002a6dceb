"""Broker accounts of a site: password hashes in Mosquitto's format, the ACL, the site's secrets."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from controller.security.credentials import broker_conf, site_file_gaps, write_credentials
from controller.security.mqtt_accounts import (
    AccountError,
    acl_text,
    hash_password,
    site_accounts,
    verify_password,
    write_password_file,
)
from controller.site import BrokerSettings, Site, SiteError, load_site

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def secure_site() -> Site:
    return load_site(ROOT / "config" / "secure-site.yaml")


def test_hash_is_mosquittos_pbkdf2_sha512_form() -> None:
    hashed = hash_password("s3cret", salt=b"0123456789ab")
    kind, iterations, salt, digest = hashed.split("$")[1:]
    assert (kind, iterations, salt) == ("7", "101", "MDEyMzQ1Njc4OWFi")
    assert len(digest) == 88  # 64 bytes of SHA-512 in base64
    assert verify_password("s3cret", hashed) and not verify_password("other", hashed)


@pytest.mark.parametrize("tool", [False, True])
def test_password_file_either_way(tmp_path: Path, tool: bool) -> None:
    if tool and not __import__("shutil").which("mosquitto_passwd"):
        pytest.skip("mosquitto_passwd is not installed")
    path = tmp_path / "passwd"
    write_password_file(path, {"floorctl": "a" * 32, "ptl-01": "b" * 32}, use_mosquitto_passwd=tool)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    lines = dict(line.split(":", 1) for line in path.read_text().splitlines())
    assert verify_password("a" * 32, lines["floorctl"]) and verify_password("b" * 32, lines["ptl-01"])
    assert list(tmp_path.iterdir()) == [path]  # no clear copy left behind


def test_acl_binds_devices_to_their_own_topics(secure_site: Site) -> None:
    acl = acl_text(secure_site)
    lines = [line for line in acl.splitlines() if line and not line.startswith("#")]
    assert "pattern read floorctl/v1/+/%u/cmd" in lines
    for channel in ("ack", "done", "state", "alert"):
        assert f"pattern write floorctl/v1/+/%u/{channel}" in lines
        assert f"topic read floorctl/v1/+/+/{channel}" in lines
    assert "pattern read floorctl/v1/sim/%u/inject" in lines  # the site runs simulators
    assert "topic write floorctl/v1/+/+/cmd" in lines
    assert "topic readwrite floorctl/v1/controller/state" in lines
    # No device is granted anything beyond its %u topics and the controller's state.
    block = acl.split("user ptl-01\n", 1)[1].split("user ", 1)[0]
    assert block.strip() == "topic read floorctl/v1/controller/state"


def test_no_fault_injection_without_simulators(secure_site: Site) -> None:
    broker = secure_site.broker.model_copy(update={"simulators": None})
    real = secure_site.model_copy(update={"broker": broker})
    assert "inject" not in acl_text(real)


def test_controller_account_must_not_be_a_device(secure_site: Site) -> None:
    broker = secure_site.broker.model_copy(update={"username": "ptl-01"})
    clash = secure_site.model_copy(update={"broker": broker})
    with pytest.raises(AccountError, match="also an MQTT device"):
        site_accounts(clash)


def test_write_credentials_then_again_keeps_and_rotate_replaces(secure_site: Site, tmp_path: Path) -> None:
    out = tmp_path / "credentials"
    first = write_credentials(secure_site, out)
    names = site_accounts(secure_site).names
    assert len(names) == 17
    secrets = {name: (out / "secrets" / f"{name}.password").read_text() for name in names}
    assert all(stat.S_IMODE((out / "secrets" / f"{n}.password").stat().st_mode) == 0o600 for n in names)
    assert all((out / "clients" / f"{n}.key").exists() for n in names)
    assert (out / ".gitignore").read_text().strip().endswith("*")
    assert any(path == out / "ca.crt" for path, _ in first.written)

    again = write_credentials(secure_site, out)
    assert {name: (out / "secrets" / f"{name}.password").read_text() for name in names} == secrets
    assert any(path == out / "ca.crt" for path, _ in again.kept)
    assert any(path == out / "broker.crt" for path, _ in again.kept)

    ca = (out / "ca.crt").read_bytes()
    write_credentials(secure_site, out, rotate=True)
    rotated = {name: (out / "secrets" / f"{name}.password").read_text() for name in names}
    assert all(rotated[n] != secrets[n] for n in names)
    assert (out / "ca.crt").read_bytes() == ca


def test_accounts_of_removed_devices_go(secure_site: Site, tmp_path: Path) -> None:
    write_credentials(secure_site, tmp_path)
    smaller = secure_site.model_copy(update={"printers": secure_site.printers[:1]})
    report = write_credentials(smaller, tmp_path)
    gone = secure_site.printers[1].id
    assert tmp_path / "secrets" / f"{gone}.password" in report.removed
    assert f"\n{gone}:" not in "\n" + (tmp_path / "passwd").read_text()


def test_broker_conf_points_into_the_directory(tmp_path: Path) -> None:
    conf = broker_conf(tmp_path, listener="1234 127.0.0.1", extra=["user root"])
    assert "/etc/mosquitto" not in conf
    assert f"password_file {tmp_path.resolve()}/passwd" in conf
    assert "\nlistener 1234 127.0.0.1\n" in conf and conf.endswith("user root\n")


def test_secure_conf_keeps_the_tuning_of_mosquitto_conf() -> None:
    def settings(name: str) -> set[str]:
        return {line for line in (ROOT / "config" / name).read_text().splitlines()
                if line and not line.startswith("#")}

    tuned = settings("mosquitto.conf") - {"allow_anonymous true"}
    assert tuned <= settings("mosquitto-secure.conf")
    assert "allow_anonymous false" in settings("mosquitto-secure.conf")


def test_the_example_site_points_at_what_credentials_writes(secure_site: Site) -> None:
    assert site_file_gaps(secure_site, Path("credentials")) == []


def test_broker_secrets_come_from_files_or_environment(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "pw").write_text("from-file\n")
    from_file = BrokerSettings(username="c", password_file=str(tmp_path / "pw"))
    assert from_file.resolved_password() == "from-file"
    monkeypatch.setenv("MQTT_PW", "from-env")
    assert BrokerSettings(username="c", password_env="MQTT_PW").resolved_password() == "from-env"
    with pytest.raises(SiteError, match="MISSING_PW"):
        BrokerSettings(username="c", password_env="MISSING_PW").resolved_password()
    with pytest.raises(SiteError, match="password_file: cannot read"):
        BrokerSettings(username="c", password_file=str(tmp_path / "nope")).resolved_password()
    with pytest.raises(ValueError, match="one of"):
        BrokerSettings(username="c", password="x", password_file="y")
    with pytest.raises(ValueError, match="needs username"):
        BrokerSettings(password_env="MQTT_PW")


def test_each_simulated_device_gets_its_own_account(secure_site: Site, tmp_path: Path) -> None:
    write_credentials(secure_site, tmp_path)
    broker = secure_site.broker.model_copy(update={"simulators": secure_site.broker.simulators.model_copy(
        update={"secrets_dir": str(tmp_path / "secrets"), "certs_dir": str(tmp_path / "clients")})})
    device = broker.for_device("ptl-01")
    assert device.username == "ptl-01"
    assert device.resolved_password() == (tmp_path / "secrets" / "ptl-01.password").read_text().strip()
    assert device.tls is not None and device.tls.cert_file == str(tmp_path / "clients" / "ptl-01.crt")
    assert device.tls.ca_file == secure_site.broker.tls.ca_file  # type: ignore[union-attr]
    plain = BrokerSettings()
    assert plain.for_device("ptl-01") is plain  # no accounts: the one shared identity, as before


def test_credentials_command(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from controller.cli import main

    out = tmp_path / "creds"
    assert main(["credentials", "--site", str(ROOT / "config" / "secure-site.yaml"), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}/passwd" in printed and "Next steps" in printed
    assert "does not point at these files" in printed  # the example names credentials/, not this one
    assert stat.S_IMODE(out.stat().st_mode) == 0o700

    clash = tmp_path / "clash.yaml"
    clash.write_text((ROOT / "config" / "secure-site.yaml").read_text().replace(
        "username: floorctl", "username: ptl-01"))
    assert main(["credentials", "--site", str(clash), "--out", str(tmp_path / "x")]) == 2
    assert "also an MQTT device id" in capsys.readouterr().err
    (tmp_path / "file").write_text("")
    site = str(ROOT / "config" / "secure-site.yaml")
    assert main(["credentials", "--site", site, "--out", str(tmp_path / "file")]) == 2
    assert main(["credentials", "--site", str(tmp_path / "missing.yaml"), "--out", str(out)]) == 2
