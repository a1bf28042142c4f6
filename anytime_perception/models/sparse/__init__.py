"""Sparse execution of the confidence-adaptive convolutions: real savings instead of the dense emulation.

    model = create_model("adpc_hrnet_w48_seg", execution="sparse")

See `units.py` for the design (it runs the blocks' conv units); `tables.py` builds the index tables of a mask,
`build.py` the optional C++ extension (CPU), `fold.py` the BN-folded dense model used as the fair dense baseline in
`benchmarks/sparse_speedup.py`. The name -> execution table is `models/execution.py`.
"""
from ._ext import extension, load_error
from .units import DENSE_ABOVE, SparseExecution

__all__ = ["SparseExecution", "DENSE_ABOVE", "extension", "load_error"]
