"""``pip install -e .`` gives the three console entry points and declares requirements.txt's pins."""
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_editable_install_has_the_entry_points(tmp_path):
    env = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env)], check=True)
    python = env / "bin" / "python"
    site = subprocess.run([python, "-c", "import site; print(site.getsitepackages()[0])"], check=True,
                          capture_output=True, text=True).stdout.strip()
    Path(site, "shared.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")  # torch & co. without downloading
    subprocess.run([python, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation", "--no-index",
                    "-e", str(REPO)], check=True, cwd=tmp_path, capture_output=True)
    for name in ("train", "test", "data"):
        result = subprocess.run([env / "bin" / f"metric-retrieval-{name}", "--help"], capture_output=True, text=True,
                                cwd=tmp_path)
        assert result.returncode == 0 and result.stdout.startswith("usage: "), result.stderr
    requires = subprocess.run([python, "-c", "import importlib.metadata as m; print(m.requires('metric-retrieval'))"],
                              capture_output=True, text=True, check=True).stdout
    pins = [line for line in (REPO / "requirements.txt").read_text().splitlines() if line and line[0] != "#"]
    assert all(pin in requires for pin in pins)


def test_every_project_package_is_installed():
    """A new top-level package (like ``producers/``) must be in pyproject's package list, or the install lacks it."""
    import fnmatch

    import tomllib

    include = tomllib.loads((REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]["include"]
    packages = [p.name for p in REPO.iterdir() if (p / "__init__.py").is_file() and p.name != "tests"]
    assert packages and all(any(fnmatch.fnmatch(name, pattern) for pattern in include) for name in packages), packages
