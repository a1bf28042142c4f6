"""`pip install .` from a fresh copy of the repository builds the sparse backend's C++ extension, and the installed
package loads it (not a library of the source tree: the check runs outside it).

Slow (a new venv, torch from the local wheel cache, one C++ compilation): one test. The package is installed with
`--no-build-isolation` so that the extension compiles against the torch it then runs with; an isolated build
would fetch a torch of its own (a different build, gigabytes) to compile against.
"""
import os
import subprocess
import sys
import venv
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]


def run(command, cwd, timeout):
    result = subprocess.run(command, cwd=cwd, capture_output=True, text=True, timeout=timeout,
                            env={k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "ANYTIME_SPARSE_EXT")})
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
    run([python, "-m", "pip", "install", "-q", "--no-build-isolation", str(source)], tmp_path, 1200)
    check = run([python, "-c", "from anytime_perception.models.sparse._ext import extension, load_error\n"
                 "import anytime_perception\n"
                 "module = extension()\n"
                 "assert module is not None, load_error()\n"
                 "print(module.__file__)\nprint(anytime_perception.__file__)"], tmp_path, 300)
    library, package = (Path(line) for line in check.stdout.split())
    assert env_dir in library.parents and env_dir in package.parents, check.stdout
    assert library.name.startswith("_sparse_cpu")
