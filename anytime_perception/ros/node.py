"""Placeholder for ``anytime_node`` (the perception node arrives in phase 2 of issue 5).

The console script and the launch files already name it, so that the package layout, launch files and parameter
files can be checked now; running it says plainly that the node is not there yet.
"""
from __future__ import annotations

import sys


def main(argv: list[str] | None = None) -> int:
    print(
        "anytime_node: the perception node is not implemented yet (issue 5, phase 2); "
        "the messages, image conversion, frame player, launch and parameter files are in place.",
        file=sys.stderr,
    )
    return 2


if __name__ == "__main__":
    sys.exit(main())
