"""pyproject.toml: the project installs as a package that imports, its declared dependencies satisfied.

The install runs offline: a fresh venv sees the test environment's packages (the pinned
torch among them) through a .pth file, and pip installs only eoseg itself into it.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
import venv
from pathlib import Path

from .conftest import ROOT

# the [project] table of pyproject.toml
DECLARED = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]

CHECK_DEPENDENCIES = """
import importlib.metadata as metadata
from packaging.requirements import Requirement
from packaging.version import Version

missing = []
for text in metadata.requires("eoseg"):
    requirement = Requirement(text)
    extras = ("onnx", "gis", "tensorboard", "dev")  # every group: the test environment has them all
    if requirement.marker is not None and not any(requirement.marker.evaluate({"extra": e}) for e in extras):
        continue
    try:
        version = Version(metadata.version(requirement.name))
    except metadata.PackageNotFoundError:
        missing.append(f"{requirement} (not installed)")
        continue
    if not requirement.specifier.contains(version, prereleases=True):
        missing.append(f"{requirement} (found {version})")
print("unsatisfied:", missing)
"""

IMPORT_EVERYTHING = """
import eoseg, eoseg.infer, eoseg.train, eoseg.onnx_engine, eoseg.gis, eoseg.weights, eoseg.lmdb_store
print("imported from", eoseg.__file__)
"""


def test_dependencies_are_declared_with_a_torch_range_and_the_optional_groups():
    torch = [d for d in DECLARED["dependencies"] if d.startswith("torch")]
    assert torch and ">=" in torch[0] and "==" not in torch[0]  # the user's own CUDA or CPU build satisfies it
    assert set(DECLARED["optional-dependencies"]) == {"onnx", "gis", "tensorboard", "dev"}
    requirements = (ROOT / "requirements.txt").read_text()
    for dependency in DECLARED["dependencies"][1:]:  # the pinned requirements hold the same packages
        assert dependency.split(">")[0] in requirements


def test_installs_into_a_fresh_venv_offline_and_imports(tmp_path):
    # a copy of what the package is built from, so that the build leaves nothing in the checkout
    source = tmp_path / "source"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "eoseg", source / "eoseg", ignore=shutil.ignore_patterns("__pycache__"))

    env = tmp_path / "env"
    venv.EnvBuilder(with_pip=False).create(env)
    python = env / "bin" / "python"
    site_packages = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                                   capture_output=True, text=True, check=True).stdout.strip()
    shared = [p for p in sys.path if p.endswith("site-packages")]
    (Path(site_packages) / "shared_test_env.pth").write_text("\n".join(shared) + "\n")

    install = subprocess.run([sys.executable, "-m", "pip", "--python", str(python), "install", "--no-deps",
                              "--no-build-isolation", "--no-index", "--quiet", str(source)],
                             capture_output=True, text=True, cwd=tmp_path)
    assert install.returncode == 0, install.stdout + install.stderr

    check = subprocess.run([python, "-c", CHECK_DEPENDENCIES], capture_output=True, text=True, cwd=tmp_path)
    assert check.returncode == 0 and check.stdout.strip() == "unsatisfied: []", check.stdout + check.stderr
    imported = subprocess.run([python, "-c", IMPORT_EVERYTHING], capture_output=True, text=True, cwd=tmp_path)
    assert imported.returncode == 0, imported.stderr
    assert imported.stdout.startswith(f"imported from {site_packages}")  # the installed copy, not the checkout
