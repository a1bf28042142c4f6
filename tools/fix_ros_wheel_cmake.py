"""Rewrite the wheel-build machine's include paths in the CMake exports of the ROS 2 PyPI wheels.

The ROS 2 wheels' exported CMake targets (``share/*/cmake/*Export.cmake``) name the include directories of the
machine that built them (``/opt/python/cp311-cp311/include/python3.11`` and a numpy include dir under it). CMake
refuses imported targets with non-existent include paths, so ``rosidl_generate_interfaces`` fails to configure
(see ../shared/reference/ros2-on-pypi.md). This replaces every such path that does not exist here with this
interpreter's Python include dir or numpy's include dir.

Usage: python tools/fix_ros_wheel_cmake.py PREFIX   (run it with the venv's python). Idempotent; prints how many
files it changed.
"""
from __future__ import annotations

import re
import sys
import sysconfig
from pathlib import Path

# An include directory inside an INTERFACE_INCLUDE_DIRECTORIES list: a path up to the next ';' or '"'.
_PYTHON_INCLUDE = re.compile(r'/[^;"]*/include/python3\.\d+')
_NUMPY_INCLUDE = re.compile(r'/[^;"]*/site-packages/numpy/(?:_core|core)/include')


def fix_exports(prefix: Path) -> list[Path]:
    import numpy

    python_include = sysconfig.get_paths()["include"]
    numpy_include = numpy.get_include()

    def replace(match: re.Match, good: str) -> str:
        path = match.group(0)
        return path if Path(path).is_dir() else good

    changed = []
    for export in sorted(prefix.glob("share/*/cmake/*Export.cmake")):
        text = export.read_text()
        new = _NUMPY_INCLUDE.sub(lambda m: replace(m, numpy_include), text)
        new = _PYTHON_INCLUDE.sub(lambda m: replace(m, python_include), new)
        if new != text:
            export.write_text(new)
            changed.append(export)
    return changed


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print(__doc__.strip().splitlines()[-2], file=sys.stderr)
        return 2
    changed = fix_exports(Path(argv[0]))
    print(f"fix_ros_wheel_cmake: rewrote include paths in {len(changed)} export file(s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
