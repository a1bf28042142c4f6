import os
from pathlib import Path

import pytest
import torch

REFERENCE_DIR = Path(os.environ.get("ANYTIME_REFERENCE_DIR", Path(__file__).resolve().parents[2] / "shared" / "reference"))
OFFICIAL_REF = REFERENCE_DIR / "official_adpc_w18s_dev_ref.pt"


@pytest.fixture(scope="session")
def official_ref():
    """Outputs of the authors' ADP-C code (see ../shared/reference/official_adpc_w18s_dev_ref.md)."""
    if not OFFICIAL_REF.is_file():
        if os.environ.get("CI"):
            pytest.fail(f"reference file missing in CI: {OFFICIAL_REF}")
        pytest.skip(f"reference outputs not found at {OFFICIAL_REF} (set ANYTIME_REFERENCE_DIR)")
    return torch.load(OFFICIAL_REF, weights_only=True)


@pytest.fixture(autouse=True)
def _deterministic_threads():
    torch.manual_seed(0)
    yield
