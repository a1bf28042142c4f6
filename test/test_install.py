"""`pip install .` from a fresh copy of the repository gives a package whose sparse backend runs its C++ extension
(not a library of the source tree: the check runs outside it).

A plain `pip install .` compiles it at install where pip builds in the environment (a project without
pyproject.toml is built there when setuptools and wheel are installed, as here); where pip builds in isolation,
which cannot import the venv's torch, the package installs without the library and the first use compiles it into a
cache. The test takes the plain path, the one users on GPU machines follow, and accepts either place. Slow (a new
venv, torch from the local wheel cache, one C++ compilation): one test.
"""
import os
import subprocess
import sys
import venv
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def run(command, cwd, timeout, **env):
    clean = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ANYTIME_SPARSE_EXT")}
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout, env={**clean, **env})
    assert result.returncode == 0, f"{' '.join(map(str, command))} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result


def fresh_copy(destination: Path) -> Path:
    """The files of the checkout that git tracks or would track (not ignored), as they are now: what a clone of
    the next commit holds, without build outputs, generated links or the dev venv."""
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, check=True).stdout
    for name in filter(None, files.decode().split("\0")):
        source, target = ROOT / name, destination / name
        if source.is_file() and not source.is_symlink():
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(source.read_bytes())
    return destination


def test_pip_install_builds_and_loads_the_sparse_extension(tmp_path):
    source = fresh_copy(tmp_path / "checkout")
    assert not list(source.rglob("_sparse_cpu*.so"))
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    python = env_dir / "bin" / "python"
    torch_version = torch.__version__.split("+")[0]
    run([python, "-m", "pip", "install", "-q", f"torch=={torch_version}", "setuptools>=64", "wheel", "numpy"],
        tmp_path, 900)
    run([python, "-m", "pip", "install", "-q", str(source)], tmp_path, 1200)
    cache = tmp_path / "ext_cache"
    probe = ("from anytime_perception.models.sparse._ext import extension, load_error\n"
             "import anytime_perception\n"
             "module = extension()\n"
             "assert module is not None, load_error()\n"
             "print(module.__file__)\nprint(anytime_perception.__file__)")
    first = run([python, "-c", probe], tmp_path, 900, ANYTIME_SPARSE_EXT_CACHE=str(cache))
    library, package = (Path(line) for line in first.stdout.split())
    assert env_dir in package.parents and library.name.startswith("_sparse_cpu"), first.stdout
    # where the library comes from depends on whether pip's build could import the venv's torch: built at install
    # (inside the installed package) or compiled on first use (into the cache, once)
    if cache in library.parents:
        assert "compiling it once" in first.stderr
    else:
        assert env_dir in library.parents and "compiling" not in first.stderr, (first.stdout, first.stderr)
    again = run([python, "-c", probe], tmp_path, 300, ANYTIME_SPARSE_EXT_CACHE=str(cache))
    assert again.stdout == first.stdout and "compiling" not in again.stderr
