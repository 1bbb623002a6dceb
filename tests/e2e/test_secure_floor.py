"""The demo floor on the secure broker configuration: TLS with client certificates, every device and
the controller on their own accounts, the ACL in force. Orders still ship end to end."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from controller.demo import OrderGenerator
from controller.security.credentials import write_credentials
from controller.site import Site
from simulators.broker import EmbeddedBroker, free_port
from simulators.site_devices import simulated_floor
from tests.contract.test_mqtt_security import secure_site
from tests.e2e.conftest import SPEED, RunningFloor, check_timelines

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(shutil.which("mosquitto") is None, reason="needs Mosquitto")]


def e2e_site(credentials: Path) -> Site:
    site = secure_site(credentials)
    # As tests/e2e/conftest.demo_site: a divert budget for a loaded 2-core machine at 100x.
    return site.model_copy(update={"sorters": [s.model_copy(update={"scan_to_divert_m": 8.0})
                                               for s in site.sorters]})


async def test_orders_ship_over_tls_with_an_account_per_device(tmp_path: Path) -> None:
    credentials = tmp_path / "credentials"
    site = e2e_site(credentials)
    write_credentials(site, credentials)
    async with EmbeddedBroker(data_dir=tmp_path / "broker", secure=credentials) as broker:
        assert broker.url.startswith("mqtts://")
        ports = {plc.id: free_port() for plc in site.plcs}
        async with simulated_floor(site, broker_url=broker.url, speed=SPEED, plc_ports=ports) as sims:
            usernames = {device.link.settings.username for device in sims.mqtt.devices()}
            assert usernames == {device.device_id for device in sims.mqtt.devices()}
            floor = RunningFloor(site, broker.url, f"sqlite:///{tmp_path / 'floor.db'}", sims, tmp_path)
            controller = await floor.start_controller()
            try:
                gen = OrderGenerator(site, "secure", seed=5)
                received = await controller.engine.receive([gen.next() for _ in range(30)])
                ids = [r.id for r in received]
                await floor.wait_finished(ids, timeout=120)
                orders = await floor.orders()
                assert [(o.id, o.state, o.reason) for o in orders if o.state != "shipped"] == []
                assert len(orders) == 30
                check_timelines(orders, await floor.commands())
            finally:
                await floor.stop_controller()
