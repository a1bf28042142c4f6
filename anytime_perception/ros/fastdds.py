"""The Fast DDS profile for large images between processes (config/fastdds_large_images.xml).

Default Fast DDS loses most images of 1.5 MB and more between processes; the profile (64 MB shared-memory segments
plus UDPv4) delivers them. Fast DDS reads ``FASTDDS_DEFAULT_PROFILES_FILE`` when a process creates its first DDS
participant, i.e. at ``rclpy.init()``: call :func:`use_large_image_profile` before that, or export the variable
for the processes you start::

    eval "$(python -m anytime_perception.ros.fastdds)"
"""
from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import MutableMapping

from .resources import config_file

PROFILE_FILE = "fastdds_large_images.xml"
ENV_VAR = "FASTDDS_DEFAULT_PROFILES_FILE"


def profile_path() -> Path:
    """Absolute path of the installed profile."""
    return config_file(PROFILE_FILE).resolve()


def use_large_image_profile(env: MutableMapping[str, str] | None = None, override: bool = False) -> str:
    """Point ``FASTDDS_DEFAULT_PROFILES_FILE`` in ``env`` (default: this process's environment) at the profile,
    unless it is already set and ``override`` is false (a user's own profile wins). Returns the value in effect.
    Only affects participants created afterwards (call it before ``rclpy.init()``) and only Fast DDS."""
    env = os.environ if env is None else env
    if override or not env.get(ENV_VAR):
        env[ENV_VAR] = str(profile_path())
    return env[ENV_VAR]


def main() -> int:
    """Print a shell line that exports the variable."""
    print(f"export {ENV_VAR}={profile_path()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
