"""Sparse execution of the confidence-adaptive convolutions: real savings instead of the dense emulation.

    model = create_model("adpc_hrnet_w48_seg", execution="sparse")

See `executor.py` for the design; `build.py` builds the optional C++ extension (CPU), `fold.py` the BN-folded dense
model used as the fair dense baseline in `benchmarks/sparse_speedup.py`.
"""
from ..masked_conv import EXECUTIONS
from ._ext import extension
from .executor import DENSE_ABOVE, SparseExecution

EXECUTIONS["sparse"] = SparseExecution

__all__ = ["SparseExecution", "DENSE_ABOVE", "extension"]
