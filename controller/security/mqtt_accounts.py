"""A site's broker accounts: who may connect (Mosquitto password file) and what each may do (ACL).

One account per MQTT device, named by its device id, and one for the controller. The ACL binds a
device's topics to its user name with Mosquitto's `%u`, and the secure broker configuration sets
`use_username_as_clientid true`, so a device can speak only as itself and cannot take another
client's id (and so cannot knock the controller off the broker).
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from controller.contract.mqtt import Channel, Topics
from controller.security.pki import write_file
from controller.site import Site

# What `mosquitto_passwd` of Mosquitto 2 writes: `user:$7$ITERATIONS$SALT$HASH`, PBKDF2-HMAC-SHA512,
# base64 salt and hash. The passwords are random and long, so the iteration count protects little;
# the default keeps every connect cheap for the broker.
PBKDF2_ITERATIONS = 101
SALT_BYTES = 12
PASSWORD_BYTES = 24  # 32 characters of URL-safe base64


class AccountError(ValueError):
    """Accounts that cannot be written for this site. `str()` is the message for the user."""


@dataclass(frozen=True)
class SiteAccounts:
    controller: str
    devices: tuple[str, ...]  # MQTT device ids, one account each
    fault_injection: bool  # the simulators' sim/{id}/inject topics are part of the ACL

    @property
    def names(self) -> tuple[str, ...]:
        return (self.controller, *self.devices)


def site_accounts(site: Site) -> SiteAccounts:
    """The accounts a site needs: the controller's (its `broker.username`, else its client id) and
    one per MQTT device. Fault injection is allowed where the site runs simulated devices with their
    own accounts (`broker.simulators`)."""
    broker = site.broker
    controller = broker.username or broker.client_id
    devices = (*(d.id for d in site.pick_lights), *(d.id for d in site.printers),
               *(d.id for d in site.pack_stations))
    if controller in devices:
        raise AccountError(f"broker.username: {controller!r} is also an MQTT device id; the controller "
                           "needs an account of its own")
    for name in (controller, *devices):
        if any(c in name for c in "+#/:") or name.startswith("$"):
            # %u in an ACL pattern never matches a name with wildcards or slashes; ':' ends a
            # password-file user name.
            raise AccountError(f"{name!r} cannot be a broker account name (no + # / : or leading $)")
    return SiteAccounts(controller, devices, broker.simulators is not None)


def new_password() -> str:
    return secrets.token_urlsafe(PASSWORD_BYTES)


def hash_password(password: str, *, salt: bytes | None = None, iterations: int = PBKDF2_ITERATIONS) -> str:
    """The `$7$` PBKDF2-SHA512 form Mosquitto 2 reads in a password file."""
    salt = salt if salt is not None else os.urandom(SALT_BYTES)
    digest = hashlib.pbkdf2_hmac("sha512", password.encode(), salt, iterations)
    return f"$7${iterations}${base64.b64encode(salt).decode()}${base64.b64encode(digest).decode()}"


def verify_password(password: str, hashed: str) -> bool:
    """Whether `password` matches a `$7$` line's hash (for tests and `floorctl credentials` checks)."""
    try:
        _, kind, iterations, salt, digest = hashed.split("$")
        if kind != "7":
            return False
        expected = hashlib.pbkdf2_hmac("sha512", password.encode(), base64.b64decode(salt), int(iterations))
    except ValueError:
        return False
    return secrets.compare_digest(expected, base64.b64decode(digest))


def write_password_file(path: Path, passwords: Mapping[str, str], *, use_mosquitto_passwd: bool | None = None,
                        ) -> str:
    """Write the broker's password file (0600) for `passwords` (user -> clear password).

    With `mosquitto_passwd` installed (or `use_mosquitto_passwd=True`), the clear file is hashed in
    place with `mosquitto_passwd -U`, as Mosquitto's documentation says; otherwise the same `$7$` lines
    are written here. Returns which way it went, for the report.
    """
    tool = shutil.which("mosquitto_passwd")
    if use_mosquitto_passwd is None:
        use_mosquitto_passwd = tool is not None
    if use_mosquitto_passwd and tool is None:
        raise AccountError("mosquitto_passwd is not installed")
    path.parent.mkdir(parents=True, exist_ok=True)
    if not use_mosquitto_passwd:
        _write_private(path, "".join(f"{user}:{hash_password(pw)}\n" for user, pw in passwords.items()))
        return "hashed by floorctl (PBKDF2-SHA512, Mosquitto 2 format)"
    assert tool is not None
    # The clear file exists only inside a private temporary directory, and only until it is hashed.
    with tempfile.TemporaryDirectory(prefix="floorctl-passwd-", dir=path.parent) as work:
        clear = Path(work) / "passwd"
        _write_private(clear, "".join(f"{user}:{pw}\n" for user, pw in passwords.items()))
        result = subprocess.run([tool, "-U", str(clear)], capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise AccountError(f"mosquitto_passwd -U failed: {(result.stderr or result.stdout).strip()}")
        os.chmod(clear, 0o600)
        os.replace(clear, path)
    return "hashed by mosquitto_passwd -U"


def acl_text(site: Site, accounts: SiteAccounts | None = None) -> str:
    """The broker's ACL file for the site.

    Devices, by pattern (`%u` is the user name, which is the device id): read their own `cmd` and
    the controller's `state`; write their own `ack`, `done`, `state` (their last-will too) and
    `alert`. The kind level is a wildcard: device ids are unique across kinds, so a device still
    speaks only as itself. The controller: write every device's `cmd`, read every device's answers,
    read and write its own `state` (retained, and its last-will).
    """
    accounts = accounts or site_accounts(site)
    topics = Topics(site.broker.topic_root)
    lines = [
        f"# Mosquitto ACL of site {site.site}, written by `floorctl credentials`. Anything not",
        "# granted here is denied; anonymous clients are refused by the broker configuration.",
        "",
        "# Every device account (user name = device id): its own topics and the controller's state.",
        f"pattern read {topics.device('+', '%u', Channel.CMD)}",
        *(f"pattern write {topics.device('+', '%u', channel)}"
          for channel in (Channel.ACK, Channel.DONE, Channel.STATE, Channel.ALERT)),
    ]
    if accounts.fault_injection:
        lines += ["# Simulated devices take fault injections on their own inject topic.",
                  f"pattern read {topics.inject('%u')}"]
    # A pattern without %u draws a warning from Mosquitto at every start, and a `topic` line before
    # the first `user` line is for anonymous clients only: so each device account reads the
    # controller's state by name.
    lines += ["", "# The controller's retained state (ONLINE / OFFLINE), which every device follows."]
    for device in accounts.devices:
        lines += [f"user {device}", f"topic read {topics.controller_state}"]
    lines += [
        "",
        "# The controller.",
        f"user {accounts.controller}",
        f"topic write {topics.all_devices(Channel.CMD)}",
        *(f"topic read {topics.all_devices(channel)}"
          for channel in (Channel.ACK, Channel.DONE, Channel.STATE, Channel.ALERT)),
        f"topic readwrite {topics.controller_state}",
    ]
    if accounts.fault_injection:
        lines += [f"topic write {topics.inject('+')}"]
    return "\n".join(lines) + "\n"


def _write_private(path: Path, text: str) -> None:
    write_file(path, text.encode(), mode=0o600)
