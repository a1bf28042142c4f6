"""`anytime-perception` command line (no ROS needed).

  anytime-perception list
  anytime-perception flops NAME [--size HxW] [--fractions P1,P2,P3]
  anytime-perception train --config config/train/adpc_hrnet_w18s_seg.yaml --data-root DIR --output DIR
  anytime-perception evaluate --model NAME --checkpoint PATH --dataset cityscapes --data-root DIR --output DIR

`python -m anytime_perception.cli` runs the same, so `torchrun --nproc_per_node N -m anytime_perception.cli train ...`
trains on N processes.
"""
from __future__ import annotations

import argparse
import sys

from .argtypes import parse_size
from .models import list_models, model_config
from .models.flops import dense_gflops_per_exit, gflops_for_fractions


def parse_fractions(text: str) -> list[float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"fractions must be comma-separated numbers, got {text!r}") from None
    if any(not 0.0 <= v <= 1.0 for v in values):
        raise argparse.ArgumentTypeError(f"fractions must be in [0, 1], got {text!r}")
    return values


def cmd_flops(args: argparse.Namespace) -> int:
    config = model_config(args.name)
    size = args.size or config.task_spec.default_input_size
    dense = dense_gflops_per_exit(config, size)
    nd = args.decimals if args.decimals is not None else (1 if max(dense) >= 20 else 2)
    rows = [("exit", "GFLOPs")]
    if args.fractions is not None:
        if not config.confidence_adaptive:
            print(f"error: {args.name} is not confidence-adaptive; --fractions needs an adpc_* model", file=sys.stderr)
            return 2
        if len(args.fractions) != config.num_exits - 1:
            print(f"error: give {config.num_exits - 1} fractions (after exits 1..{config.num_exits - 1})",
                  file=sys.stderr)
            return 2
        adaptive = gflops_for_fractions(config, size, args.fractions)
        rows = [("exit", "dense GFLOPs", "adaptive GFLOPs")]
        rows += [(str(i), f"{d:.{nd}f}", f"{a:.{nd}f}") for i, (d, a) in enumerate(zip(dense, adaptive), 1)]
        rows.append(("mean", f"{sum(dense) / len(dense):.{nd}f}", f"{sum(adaptive) / len(adaptive):.{nd}f}"))
    else:
        rows += [(str(i), f"{d:.{nd}f}") for i, d in enumerate(dense, 1)]
        if len(dense) > 1:
            rows.append(("mean", f"{sum(dense) / len(dense):.{nd}f}"))
    print(f"{args.name} at {size[0]}x{size[1]} (GMACs / 2^30 of conv layers, cumulative per exit, as in the paper)")
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="anytime-perception", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("list", help="list the registered model names")
    p = sub.add_parser("flops", help="per-exit GFLOPs in the paper's convention")
    p.add_argument("name", help="model name, e.g. rh_hrnet_w48_seg (see `list`)")
    p.add_argument("--size", type=parse_size, default=None, help="input HxW (default: the task's, 1024x2048 / 256x256)")
    p.add_argument("--fractions", type=parse_fractions, default=None,
                   help="adpc models: computed share after exits 1..3, e.g. 0.82,0.63,0.38")
    p.add_argument("--decimals", type=int, default=None, help="digits after the point (default: 1, or 2 below 20)")
    # train/evaluate import their dependencies (OpenCV, YAML, plotting) only when they are asked for
    from .training import evaluate, train

    train.add_arguments(sub.add_parser("train", help="train a model (YAML config + flags; torchrun for DDP)",
                                       description=train.__doc__,
                                       formatter_class=argparse.RawDescriptionHelpFormatter))
    evaluate.add_arguments(sub.add_parser("evaluate", help="per-exit accuracy and GFLOPs on a dataset split",
                                          description=evaluate.__doc__,
                                          formatter_class=argparse.RawDescriptionHelpFormatter))
    args = parser.parse_args(argv)
    if args.command == "train":
        return train.run(args)
    if args.command == "evaluate":
        return evaluate.run(args)
    if args.command == "list":
        print("\n".join(list_models()))
        return 0
    try:
        return cmd_flops(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
