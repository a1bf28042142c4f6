"""Loads the C++ extension of the sparse backend.

Where it comes from, first found wins: built next to this file (`tools/setup-venv.sh`, `pip install
--no-build-isolation .`, colcon), or compiled on first use into a per-user cache (`pip install .` with build
isolation cannot compile against the torch it will run with, so it installs without the library). The first use
then compiles it once (about a minute, one warning line) under a lock, keyed by the source, torch and Python, in
`$ANYTIME_SPARSE_EXT_CACHE` (default `~/.cache/anytime_perception/sparse_ext`); later processes load it from there.
Without a compiler the backend runs on plain PyTorch ops, after one warning saying why.

`ANYTIME_SPARSE_EXT=0` disables the extension (the PyTorch-op path then runs everywhere); `ANYTIME_SPARSE_EXT=nojit`
loads a built library only and never compiles.
"""
from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import sys
import sysconfig
import warnings
from pathlib import Path

_STATE: dict = {}
ABI = 2
MODULE = "anytime_perception.models.sparse._sparse_cpu"


def extension():
    """The loaded `_sparse_cpu` module, or None when it is not built, disabled or stale."""
    if "module" not in _STATE:
        module = None
        if os.environ.get("ANYTIME_SPARSE_EXT", "1") == "0":
            _STATE["error"] = "disabled by ANYTIME_SPARSE_EXT=0"
        else:
            try:
                import torch  # noqa: F401  (the library links against libtorch)

                try:
                    module = importlib.import_module(MODULE)
                except ImportError:
                    if os.environ.get("ANYTIME_SPARSE_EXT") == "nojit":
                        raise
                    module = _compiled_on_first_use()
                if getattr(module, "ABI", None) != ABI:
                    _STATE["error"] = ("out of date; rebuild it with "
                                       "`python -m anytime_perception.models.sparse.build --force`")
                    warnings.warn(f"the sparse C++ extension is {_STATE['error']}", stacklevel=2)
                    module = None
            except ImportError as err:
                _STATE["error"] = str(err)
                module = None
        _STATE["module"] = module
    return _STATE["module"]


def load_error() -> str | None:
    """Why `extension()` is None (not built, disabled, out of date), or None when it loaded."""
    extension()
    return _STATE.get("error")


def cache_directory() -> Path:
    """Where a first-use build of this source, for this torch and this Python, lives."""
    import torch

    from .build import SOURCE

    root = Path(os.environ.get("ANYTIME_SPARSE_EXT_CACHE") or Path.home() / ".cache" / "anytime_perception" / "sparse_ext")
    key = hashlib.sha256(SOURCE.read_bytes() + torch.__version__.encode() + sys.version.encode() +
                         sysconfig.get_platform().encode()).hexdigest()[:16]
    return root / key


def _compiled_on_first_use():
    """Import the library from the cache, compiling it there first if it is not there yet (one process compiles;
    others wait on the lock and load its result)."""
    import fcntl

    from .build import build_into

    directory = cache_directory()
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        found = sorted(directory.rglob("_sparse_cpu*.so"))
        if not found:
            warnings.warn(f"the sparse backend's C++ extension is not installed: compiling it once into {directory} "
                          f"(about a minute)", stacklevel=4)
            try:
                found = [build_into(directory)]
            except RuntimeError as error:
                raise ImportError(f"no C++ extension (not installed, and compiling it failed: "
                                  f"{str(error).splitlines()[0]})") from None
    spec = importlib.util.spec_from_file_location(MODULE, found[0])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    sys.modules[MODULE] = module
    return module
