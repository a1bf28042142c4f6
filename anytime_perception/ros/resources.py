"""Where the package's installed files are: share/anytime_perception (launch, config, rviz); the shipped clip is
:func:`anytime_perception.data.frames.clip_dir`, re-exported here."""
from __future__ import annotations

import sys
from pathlib import Path

from ..data.frames import CLIP_NAME, CLIP_RATE_HZ, clip_dir  # noqa: F401  (the clip lives with the frame sources)

PACKAGE = "anytime_perception"
_SOURCE_ROOT = Path(__file__).resolve().parents[2]   # the checkout, when running from the source tree


def share_dir() -> Path:
    """share/anytime_perception: from the ament index (a ROS 2 install or the dev venv, whose AMENT_PREFIX_PATH
    the venv sets up), else ``<sys.prefix>/share/anytime_perception`` (where pip installs the data files), else the
    source checkout (which has the same launch/, config/, rviz/ folders). Raises FileNotFoundError if none has
    config/."""
    candidates = []
    try:
        from ament_index_python.packages import PackageNotFoundError, get_package_share_directory

        try:
            candidates.append(Path(get_package_share_directory(PACKAGE)))
        except (PackageNotFoundError, LookupError, ValueError):
            pass
    except ImportError:
        pass
    candidates += [Path(sys.prefix) / "share" / PACKAGE, _SOURCE_ROOT]
    for candidate in candidates:
        if (candidate / "config").is_dir():
            return candidate
    raise FileNotFoundError(f"share/{PACKAGE} with config/ not found; looked in {', '.join(map(str, candidates))}")


def config_file(name: str) -> Path:
    """A file of share/anytime_perception/config, e.g. ``config_file('seg.yaml')``."""
    path = share_dir() / "config" / name
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    return path
