"""Training throughput: images/s of the real `train` loop and the share of step time spent waiting for data.

Runs `anytime_perception.training.train` for a few iterations per (model, precision) on a folder dataset of
synthetic street-like images written to a temporary directory (PNG, decoded and augmented by the real pipeline in
DataLoader workers), and reads images/s and the data-wait share from the run's log.jsonl over the iterations after
warm-up. All rows are measured in one process, one after another, so compare them as ratios.

  .venv/bin/python benchmarks/train_throughput.py                       # W18s and W48 ADP-C, 512x1024, CPU
  .venv/bin/python benchmarks/train_throughput.py --device cuda --precisions none,bf16,fp16 --batch-size 4
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def write_dataset(root: Path, count: int, size: tuple[int, int], num_classes: int, seed: int = 0) -> None:
    """Blocks of class colours with noise, the label the block's class: decoding and augmentation cost like real
    frames of that size (compressed PNGs of smooth regions), not like noise."""
    import cv2

    rng = np.random.default_rng(seed)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    colors = rng.integers(0, 256, size=(num_classes, 3))
    h, w = size
    for i in range(count):
        label = np.zeros((h, w), np.uint8)
        for _ in range(12):
            y, x = rng.integers(0, h), rng.integers(0, w)
            label[y:y + rng.integers(h // 8, h // 2), x:x + rng.integers(w // 8, w // 2)] = rng.integers(num_classes)
        image = colors[label].astype(np.float32) + rng.normal(0, 12, size=(h, w, 3))
        cv2.imwrite(str(root / "images" / f"frame_{i:03d}.png"), np.clip(image, 0, 255).astype(np.uint8))
        cv2.imwrite(str(root / "labels" / f"frame_{i:03d}.png"), label)
    names = [f"class_{k}" for k in range(num_classes)]
    (root / "classes.yaml").write_text(
        "names: [" + ", ".join(names) + "]\ncolors: [" + ", ".join(f"[{r}, {g}, {b}]" for r, g, b in colors) + "]\n"
        "ignore_index: 255\n")


def measure(model: str, precision: str, args, data_root: Path, work: Path) -> dict:
    from anytime_perception.training.config import TrainConfig
    from anytime_perception.training.train import train

    iters = args.warmup + args.iters
    output = work / f"{model}_{precision}"
    config = TrainConfig(model=model, dataset="folder", data_root=str(data_root), crop=args.crop,
                         base_size=max(args.image_size), batch_size=args.batch_size, iters=iters, lr=0.01,
                         amp=precision, workers=args.workers, device=args.device, output=str(output), log_every=1,
                         checkpoint_every=10**9, precise_bn_batches=0, seed=0)
    config.validate()
    start = time.perf_counter()
    train(config)
    wall = time.perf_counter() - start
    records = [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()][args.warmup:]
    images_per_s = float(np.mean([r["img_per_s"] for r in records]))
    data_share = float(np.mean([r["data_share"] for r in records]))
    return {"model": model, "precision": precision, "img_per_s": images_per_s, "s_per_step":
            args.batch_size / images_per_s, "data_share": data_share, "wall_s": wall}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="adpc_hrnet_w18s_seg,adpc_hrnet_w48_seg")
    parser.add_argument("--precisions", default="none,bf16", help="none (fp32), bf16, fp16 (CUDA)")
    parser.add_argument("--crop", default="512x1024")
    parser.add_argument("--image-size", default="1024x2048", help="size of the synthetic dataset's frames")
    parser.add_argument("--batch-size", type=int, default=2)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--iters", type=int, default=4, help="measured iterations after the warm-up")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    args = parser.parse_args()
    from anytime_perception.argtypes import parse_size

    args.crop, args.image_size = parse_size(args.crop), parse_size(args.image_size)
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    import torch

    with tempfile.TemporaryDirectory(prefix="train_throughput_") as tmp:
        work = Path(tmp)
        data_root = work / "data"
        write_dataset(data_root, count=max(8, args.batch_size * (args.warmup + args.iters)), size=args.image_size,
                      num_classes=19)
        rows = [measure(m, p, args, data_root, work) for m in args.models.split(",") for p in args.precisions.split(",")]
    device = torch.cuda.get_device_name() if args.device == "cuda" else f"CPU, {torch.get_num_threads()} threads " \
        f"({torch.backends.cpu.get_cpu_capability()}, native bf16: {torch.ops.mkldnn._is_mkldnn_bf16_supported()})"
    print(f"\ntraining throughput, {args.crop[0]}x{args.crop[1]} crops of {args.image_size[0]}x{args.image_size[1]} "
          f"PNG frames, batch {args.batch_size}, {args.workers} data workers, {device}; mean of {args.iters} "
          f"iterations after {args.warmup} warm-up")
    header = ("model", "precision", "img/s", "s/step", "data wait share", "vs fp32")
    base = {r["model"]: r["img_per_s"] for r in rows if r["precision"] == "none"}
    table = [header] + [(r["model"], "fp32" if r["precision"] == "none" else r["precision"], f"{r['img_per_s']:.3f}",
                         f"{r['s_per_step']:.2f}", f"{100 * r['data_share']:.1f}%",
                         f"{r['img_per_s'] / base[r['model']]:.2f}x" if r["model"] in base else "-") for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(header))]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in table[1:]:
        print("| " + " | ".join(c.ljust(w) for c, w in zip(row, widths)) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
