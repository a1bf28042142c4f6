"""Command-line value types shared by every entry point (`anytime-perception`, `anytime-demo`, the node's tools)."""
from __future__ import annotations

import argparse


def parse_size(text: str) -> tuple[int, int]:
    """'512x1024' -> (512, 1024) as (H, W); a clear message for anything else."""
    try:
        h, w = (int(v) for v in str(text).lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 512x1024 (HxW), got {text!r}") from None
    if h < 1 or w < 1:
        raise argparse.ArgumentTypeError(f"size must be positive, got {text!r}")
    return h, w


def parse_floats(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in str(text).split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None
