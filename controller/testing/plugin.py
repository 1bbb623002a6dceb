"""floorctl's pytest plugin: a simulated floor and a logged-in API client as fixtures.

Installed with floorctl and loaded by pytest through the `pytest11` entry point. Fixtures:

- `floor`: a private broker, every simulator of a site file and the controller with its API, on free
  ports (controller.testing.floor.Floor): inject and clear faults, play fault timelines.
- `api`: an HTTP client of that floor's API, logged in (controller.testing.api.FloorApi): release
  orders, wait for a state, check an order's route.

Which floor, most specific first: `@pytest.mark.floorctl(site=..., speed=..., database=..., auth=...,
role=...)` on a test (or module: `pytestmark`), the command line (`--floorctl-site`,
`--floorctl-speed`, `--floorctl-database`), the ini file (`floorctl_site`, `floorctl_speed`,
`floorctl_database`), then the defaults: the demo floor at 50x on SQLite. `controller=False` starts the
broker and the simulators only, for a controller (or a tool) the test starts itself. Nothing heavy is imported
until a test asks for a floor, so the plugin costs other test suites nothing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from controller.testing.api import FloorApi
    from controller.testing.floor import Floor, FloorOptions

MARKER = ("floorctl(site=None, speed=None, database=None, auth=True, role='admin', controller=True): "
          "the floor this test's `floor` and `api` run on (floorctl's pytest plugin, docs/testing.md)")


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("floorctl", "floorctl simulated floor (fixtures floor and api)")
    group.addoption("--floorctl-site", metavar="FILE",
                    help="site file of the test floor (default: the demo's)")
    group.addoption("--floorctl-speed", metavar="X", type=float, help="time scale of the floor (default 50)")
    group.addoption("--floorctl-database", metavar="URL",
                    help="sqlite (default) or a PostgreSQL server URL; each floor gets a fresh database")
    parser.addini("floorctl_site", "site file of the test floor, relative to the rootdir")
    parser.addini("floorctl_speed", "time scale of the test floor (default 50)")
    parser.addini("floorctl_database", "sqlite or a PostgreSQL server URL")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", MARKER)


def floor_options(request: pytest.FixtureRequest) -> FloorOptions:
    """The floor a test asked for: its marker, else the command line, else the ini file, else defaults."""
    from controller.testing.floor import FloorOptions

    config = request.config
    marker = request.node.get_closest_marker("floorctl")
    marked: dict[str, Any] = dict(marker.kwargs) if marker is not None else {}
    unknown = set(marked) - {"site", "speed", "database", "auth", "role", "controller"}
    if unknown:
        raise pytest.UsageError(f"@pytest.mark.floorctl: unknown argument(s) {', '.join(sorted(unknown))}")

    def setting(name: str) -> tuple[Any, Path]:
        if marked.get(name) is not None:
            return marked[name], config.rootpath
        given = config.getoption(f"--floorctl-{name}")
        if given is not None:
            return given, config.invocation_params.dir
        return config.getini(f"floorctl_{name}") or None, config.rootpath

    options = FloorOptions()
    site, base = setting("site")
    if site is not None:
        options.site = Path(site) if Path(site).is_absolute() else base / site
    speed, _ = setting("speed")
    if speed is not None:
        options.speed = float(speed)
        if options.speed <= 0:
            raise pytest.UsageError(f"floorctl speed must be > 0, got {speed}")
    database, _ = setting("database")
    if database is not None:
        options.database = str(database)
    options.auth = bool(marked.get("auth", True))
    options.controller = bool(marked.get("controller", True))
    options.role = str(marked.get("role", options.role))
    return options


@pytest.fixture
def floor(request: pytest.FixtureRequest) -> Iterator[Floor]:
    """A live simulated floor with its controller and API, started for this test and stopped after."""
    from controller.testing.floor import Floor

    with Floor(floor_options(request)) as running:
        yield running


@pytest.fixture
def api(floor: Floor) -> Iterator[FloorApi]:
    """An HTTP client of the floor's API, logged in (a panel session with the floor's test user)."""
    from controller.testing.api import FloorApi

    with FloorApi(floor.api_url, floor.site) as client:
        if floor.options.auth:
            client.log_in(floor.options.user, floor.password)
        yield client
