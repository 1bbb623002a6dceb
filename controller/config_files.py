"""The files of config/ (the demo and peak site files, the tuned mosquitto.conf) wherever floorctl runs.

config/ is where they are edited. Run from a checkout (or an editable install of one), floorctl
reads them there. A wheel carries copies as data files (pyproject.toml, `data-files`), which pip
installs under `<prefix>/share/floorctl/config/`; an installed floorctl finds them through its own
record of installed files.
"""

from __future__ import annotations

import functools
from importlib import metadata
from pathlib import Path

CODE_ROOT = Path(__file__).resolve().parents[1]  # the directory that holds the `controller` package
INSTALLED_DIR = "share/floorctl/config"


def from_checkout() -> bool:
    """True when this `controller` package is the one in a checkout (not an installed copy)."""
    return (CODE_ROOT / "pyproject.toml").is_file() and (CODE_ROOT / "config").is_dir()


@functools.cache
def config_file(name: str) -> Path:
    """config/<name> of the checkout this code runs from, else the copy installed with floorctl."""
    if from_checkout() and (CODE_ROOT / "config" / name).is_file():
        return CODE_ROOT / "config" / name
    try:
        files = metadata.distribution("floorctl").files or []
    except metadata.PackageNotFoundError:
        files = []
    for file in files:
        if file.as_posix().endswith(f"{INSTALLED_DIR}/{name}"):  # name may be in a folder: whatif/x.yaml
            path = Path(str(file.locate())).resolve()
            if path.is_file():
                return path
    raise FileNotFoundError(f"config/{name}: floorctl runs neither from a checkout nor from an "
                            f"installation that carries its config files ({INSTALLED_DIR})")
