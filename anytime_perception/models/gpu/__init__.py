"""The sparse backend on GPUs: Triton kernels over active output tiles (`execution="triton"`, and what
`execution="sparse"` runs on CUDA tensors when Triton is installed: `pip install .[gpu]`).

`tiles.py` builds the tile tables of a mask, `kernels.py` holds the Triton kernels (imported only when Triton is),
`execution.py` the execution class. Correctness without a GPU: the kernels run on CPU tensors under Triton's
interpreter (`TRITON_INTERPRET=1` before Triton is imported), which is how the tests check them against the emulation.
"""
from .execution import TritonExecution, kernels_run_on, triton_error

__all__ = ["TritonExecution", "kernels_run_on", "triton_error"]
