"""`pip install .` (not editable) into a fresh venv, then a fast job from another folder: the configs ship in the
wheel, the console scripts exist, and nothing is written into site-packages.

To avoid a 3 GB download the temporary venv borrows the test environment's installed dependencies (a .pth
file listing its site-packages) and installs only retina-seg itself: `pip install --no-deps
--no-build-isolation --no-index`, offline, in about half a minute."""

from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient
from packaging.specifiers import SpecifierSet

from retina_seg.config import PROJECT_ROOT
from retina_seg.serve.viewer import FILES
from tests.conftest import TINY

pytestmark = pytest.mark.slow  # end-to-end: left out of make test-fast

SCRIPTS = ["retina-seg-train", "retina-seg-evaluate", "retina-seg-predict", "retina-seg-compare", "retina-seg-promote",
           "retina-seg-export", "retina-seg-reconcile", "retina-seg-upload", "retina-seg-server", "retina-seg-serve",
           "retina-seg-serve-key"]


def project_copy(target: Path) -> Path:
    """The project's files as git sees them (tracked and new, not ignored), so the build leaves the checkout clean."""
    listed = subprocess.run(["git", "-C", str(PROJECT_ROOT), "ls-files", "--cached", "--others", "--exclude-standard"],
                            capture_output=True, text=True, check=True).stdout.split("\n")
    for name in filter(None, listed):
        source = PROJECT_ROOT / name
        if not source.exists() and not source.is_symlink():
            continue  # deleted in the working tree
        (target / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target / name, follow_symlinks=False)
    return target


def files_under(folder: Path) -> set:
    return {p.relative_to(folder) for p in folder.rglob("*") if "__pycache__" not in p.parts}


@pytest.mark.skipif(shutil.which("git") is None, reason="git is needed to list the project's files")
def test_wheel_install_runs_a_fast_job_from_another_folder(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    [packages] = [Path(p) for p in subprocess.run([python, "-c", "import site; print(*site.getsitepackages())"],
                                                  capture_output=True, text=True, check=True).stdout.split()]
    (packages / "borrowed.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    source = project_copy(tmp_path / "source")
    done = subprocess.run([python, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "--no-index", "-q",
                           str(source)], capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    installed = packages / "retina_seg"
    assert (installed / "py.typed").is_file() and (installed / "conf" / "config.yaml").is_file()
    assert not (installed / "conf").is_symlink() and (installed / "conf" / "backbone" / "resnet34.yaml").is_file()
    assert all((venv / "bin" / script).is_file() for script in SCRIPTS)
    for name in FILES.values():  # the viewer page the server answers GET / with
        static = Path("serve") / "static" / name[0]
        assert (installed / static).read_bytes() == (PROJECT_ROOT / "retina_seg" / static).read_bytes(), static
    before = files_under(venv)

    work = tmp_path / "elsewhere"
    work.mkdir()
    done = subprocess.run([python, "-m", "retina_seg.run", *TINY], cwd=work, capture_output=True, text=True, env=env,
                          timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    where = subprocess.run([python, "-c", "import retina_seg; print(retina_seg.__file__)"], cwd=work,
                           capture_output=True, text=True, env=env).stdout
    assert where.startswith(str(installed)), where
    assert files_under(venv) == before, "the job wrote into the venv"
    [run] = MlflowClient(f"sqlite:///{work}/mlflow.db").search_runs(["1"])
    assert run.info.status == "FINISHED"
    assert (work / ".cache" / "synthetic").is_dir() and (work / "outputs").is_dir()
    # a console script finds its configs in the installed package too (Hydra looks them up as `retina_seg.conf`)
    done = subprocess.run([venv / "bin" / "retina-seg-reconcile", "all_experiments=true"], cwd=work,
                          capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0 and "nothing changed" in done.stdout, done.stderr[-3000:]


def test_the_python_versions_claimed_are_those_the_code_runs_on():
    """The request guard uses asyncio.timeout (Python 3.11): 3.10 must not be admitted, and the classifiers and
    ruff's target say the same as requires-python."""
    meta = tomllib.loads((PROJECT_ROOT / "pyproject.toml").read_text())
    admitted = SpecifierSet(meta["project"]["requires-python"])
    assert "3.10" not in admitted and "3.11" in admitted
    assert "asyncio.timeout" in (PROJECT_ROOT / "retina_seg" / "serve" / "guard.py").read_text()
    prefix = "Programming Language :: Python :: 3."
    claimed = {c.removeprefix("Programming Language :: Python :: ") for c in meta["project"]["classifiers"]
               if c.startswith(prefix) and c.removeprefix(prefix).isdigit()}
    assert claimed == {f"3.{minor}" for minor in range(8, 15) if f"3.{minor}" in admitted}
    assert meta["tool"]["ruff"]["target-version"] == "py311"
