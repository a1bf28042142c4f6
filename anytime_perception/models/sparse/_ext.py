"""Loads the C++ extension of the sparse backend if it was built (`python -m anytime_perception.models.sparse.build`).

`ANYTIME_SPARSE_EXT=0` in the environment disables it (the PyTorch-op path then runs everywhere).
"""
from __future__ import annotations

import importlib
import os
import warnings

_STATE: dict = {}
ABI = 2


def extension():
    """The loaded `_sparse_cpu` module, or None when it is not built, disabled or stale."""
    if "module" not in _STATE:
        module = None
        if os.environ.get("ANYTIME_SPARSE_EXT", "1") == "0":
            _STATE["error"] = "disabled by ANYTIME_SPARSE_EXT=0"
        else:
            try:
                import torch  # noqa: F401  (the library links against libtorch)

                module = importlib.import_module("anytime_perception.models.sparse._sparse_cpu")
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
