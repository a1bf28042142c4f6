import os
from pathlib import Path

import pytest
import torch

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
