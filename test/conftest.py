import contextlib
import os
from pathlib import Path

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

REFERENCE_DIR = Path(os.environ.get("ANYTIME_REFERENCE_DIR", Path(__file__).resolve().parents[2] / "shared" / "reference"))
OFFICIAL_REF = REFERENCE_DIR / "official_adpc_w18s_dev_ref.pt"


def dependency_missing(error: ImportError, what: str = "ROS 2 or the generated messages") -> None:
    """A test module's dependencies did not import. In CI (where tools/setup-venv.sh installs everything) that is a
    failure, never a skip; in a partial checkout the module is skipped with the way to fix it."""
    if os.environ.get("CI"):
        raise error
    pytest.skip(f"{what} missing ({error}); run tools/setup-venv.sh", allow_module_level=True)


@pytest.fixture(scope="session")
def official_ref():
    """Outputs of the authors' ADP-C code (see ../shared/reference/official_adpc_w18s_dev_ref.md)."""
    if not OFFICIAL_REF.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"reference file missing in CI: {OFFICIAL_REF}")
        pytest.skip(f"reference outputs not found at {OFFICIAL_REF} (set ANYTIME_REFERENCE_DIR)")
    return torch.load(OFFICIAL_REF, weights_only=True)


@pytest.fixture
def one_intra_op_thread():
    """One PyTorch intra-op thread for a test of tiny forwards: they gain nothing from a second thread, and on a busy
    2-core machine OpenMP threads waiting for each other make them many times slower (measured: a 64x64 W18s forward
    0.2 s on one thread, 3 s on two). Modules opt in with `pytestmark = pytest.mark.usefixtures(...)`."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.manual_seed(0)
    yield


# ----- ROS 2 tests (test_ros_*.py, test_launch*.py) ------------------------------------------------------------
@pytest.fixture(scope="session", autouse=True)
def _ros_isolation():
    """Keep this run's ROS 2 traffic to itself: discovery on loopback only and a random domain id in 100..200
    (concurrent runs on this machine pick different ones; tests also use their own topic namespaces). Set before any
    rclpy context exists; subprocesses inherit it."""
    import random

    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    os.environ["ROS_DOMAIN_ID"] = str(random.SystemRandom().randint(100, 200))
    os.environ.pop("ROS_PYTHON_CHECK_FIELDS", None)   # ~700x slower assignment of image data
    yield


@pytest.fixture
def ros_context():
    """An initialised rclpy Context of its own, shut down after the test."""
    import rclpy

    context = rclpy.Context()
    rclpy.init(context=context)
    yield context
    rclpy.try_shutdown(context=context)


class HostReads(TorchDispatchMode):
    """Records the ops that read tensor values on the host, each of which waits for the device on a GPU: scalar
    reads (`.item()`, `float()`, `bool()`), ops whose output size depends on values (nonzero, boolean indexing), and
    `Tensor.cpu/numpy/tolist`, which do not dispatch for CPU tensors and are patched while the mode is on.
    `paused()` leaves a stretch out (Triton's interpreter copies its arguments to numpy)."""

    VALUE_DEPENDENT = {torch.ops.aten._local_scalar_dense.default, torch.ops.aten.nonzero.default,
                       torch.ops.aten.masked_select.default, torch.ops.aten.unique_consecutive.default,
                       torch.ops.aten._unique2.default}
    PATCHED = ("cpu", "numpy", "tolist")

    def __init__(self):
        super().__init__()
        self.reads: list[str] = []
        self._counting = True
        self._originals = {}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if self._counting and (func in self.VALUE_DEPENDENT or (func is torch.ops.aten.index.Tensor and any(
                i is not None and i.dtype == torch.bool for i in args[1]))):
            self.reads.append(str(func))
        return func(*args, **kwargs)

    def __enter__(self):
        for name in self.PATCHED:
            original = self._originals[name] = getattr(torch.Tensor, name)
            setattr(torch.Tensor, name, self._recording(name, original))
        return super().__enter__()

    def __exit__(self, *exc):
        for name, original in self._originals.items():
            setattr(torch.Tensor, name, original)
        return super().__exit__(*exc)

    def _recording(self, name, original):
        def method(tensor, *args, **kwargs):
            if self._counting:
                self.reads.append(f"Tensor.{name}")
            return original(tensor, *args, **kwargs)
        return method

    @contextlib.contextmanager
    def paused(self):
        counting, self._counting = self._counting, False
        try:
            yield
        finally:
            self._counting = counting
