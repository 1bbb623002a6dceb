"""floorctl built into a wheel from a copy of the sources and installed alone (`--no-deps`) into a
fresh venv away from the checkout. Its dependencies come from the interpreter running the tests: a .pth
file puts that interpreter's site-packages on the new venv's path (as plain directories, so the
editable install of the checkout that lives there is not activated). Nothing puts the checkout on the
path: no PYTHONPATH, and the commands run from the test's directory."""

from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SOURCES = ("controller", "adapters", "simulators", "config", "pyproject.toml", "README.md")


def run(argv: list[str], cwd: Path, timeout: float, env: dict[str, str] | None = None) -> str:
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                          check=False)
    assert done.returncode == 0, \
        f"{argv[:4]} exited {done.returncode}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout



def install_wheel(tmp_path: Path) -> Path:
    """A fresh venv in `tmp_path`, outside the checkout, with only the floorctl wheel installed in it:
    its bin/."""
    source = tmp_path / "src"
    source.mkdir()
    for name in SOURCES:
        if (ROOT / name).is_dir():
            shutil.copytree(ROOT / name, source / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(ROOT / name, source / name)
    quiet = ["--disable-pip-version-check", "--no-input", "-q"]
    dist = tmp_path / "dist"
    run([sys.executable, "-m", "pip", "wheel", *quiet, "--no-deps", "-w", str(dist), str(source)], tmp_path,
        timeout=180)
    wheel = next(dist.glob("floorctl-*.whl"))
    venv = tmp_path / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], tmp_path, timeout=60)
    python = venv / "bin" / "python"
    run([sys.executable, "-m", "pip", "--python", str(python), "install", *quiet, "--no-deps", str(wheel)],
        tmp_path, timeout=120)
    purelib = run([str(python), "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"], tmp_path, 30)
    deps = dict.fromkeys(sysconfig.get_path(key) for key in ("purelib", "platlib"))
    (Path(purelib.strip()) / "zz_floorctl_test_deps.pth").write_text("".join(f"{d}\n" for d in deps))
    return venv / "bin"
