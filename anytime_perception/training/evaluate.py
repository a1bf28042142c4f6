"""`anytime-perception evaluate`: every exit's accuracy and computation on a dataset split, the authors' way.

  anytime-perception evaluate --model adpc_hrnet_w48_seg --checkpoint adpc_w48.pth --dataset cityscapes \\
      --data-root data/cityscapes --split val --output eval/adpc_w48 [--save-predictions] [--visualize 5]

Segmentation: every image at its own size (or `--input-size HxW`), each exit's logits bilinearly upsampled to the
label's size, argmax, one confusion matrix per exit over the whole split; IoU per class and mIoU over all classes
(255 ignored). Pose: MPII's PCKh@0.5 (head size 0.6 x head-box diagonal; the mean is weighted by joint counts and
leaves out pelvis and thorax) with the flip test (`--no-flip-test` to skip). GFLOPs (GMACs / 2^30, cumulative from
the input, the paper's convention) and the computed fraction are measured per image and averaged per exit.

OUTPUT gets metrics.json ({"exits": [{"exit": 1, "miou": ..., "iou": [...], "gflops": ..., "computed_fraction":
...}, ...]}; pose: "pckh", "per_joint", "groups"; accuracies as fractions in [0, 1]), the same as metrics.csv and a
printed table (in %), accuracy_vs_gflops.png (the paper's Fig. 3, with the paper's points when it reports this model
on this dataset), with --save-predictions every exit's predictions (Cityscapes: predictions/exit{k}/{city}/
{city}_{seq}_{frame}.png in label ids, which cityscapesscripts' evalPixelLevelSemanticLabeling and the benchmark
server take as they are; pose: predictions/exit{k}.json), and with --visualize N a figure like the paper's Fig. 5 for
each of the first N images (visualize/). Under torchrun the split is shared among the processes and the counts are
summed; rank 0 writes.
"""
from __future__ import annotations

import argparse
import csv
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor

from ..argtypes import parse_size
from ..tasks.metrics import ConfusionMatrix, ExitCostMeter, PCKhAccumulator, flip_test_average, sum_across_ranks
from ..tasks.pose import decode_heatmaps

DEFAULT_POSE_BATCH = 16


# ----- one batch's outputs, for the callers' own use (saving, figures) ----------------------------------------------
@dataclass
class ExitOutput:
    """One exit's scored predictions for a batch of B images (with the flip test: of the unflipped images, costs
    averaged over both passes)."""

    index: int  # 1-based
    confidence: Tensor  # (B, h, w) the criterion's confidence at 1/4 input resolution
    compute_mask: Tensor | None  # (B, h, w) 1 = computed at this exit; None = everything
    computed_fraction: Tensor  # (B,)
    gflops: Tensor  # (B,) cumulative
    labels: Tensor | None = None  # seg: (B, H0, W0) class ids at the label's size
    heatmaps: Tensor | None = None  # pose: (B, J, h, w), flip-test averaged
    keypoints: np.ndarray | None = None  # pose: (B, J, 2) x, y in original image pixels


BatchCallback = Callable[[dict, list[ExitOutput]], None]


def _rank_and_world() -> tuple[int, int]:
    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


def _check_compatible(model, dataset) -> None:
    config = model.config
    task = getattr(dataset, "task", None)
    if task != config.task:
        raise ValueError(f"the model's task is {config.task!r} but dataset {dataset!r} is {task!r}")
    expected = dataset.num_classes if task == "seg" else dataset.num_joints
    if config.outputs != expected:
        what = "classes" if task == "seg" else "joints"
        raise ValueError(f"the model has {config.outputs} outputs but dataset {dataset!r} has {expected} {what} "
                         f"(give a model with num_classes={expected})")


def evaluate_model(model, dataset, *, device: torch.device | str | None = None, flip_test: bool = True,
                   batch_size: int | None = None, num_workers: int = 0, max_images: int | None = None,
                   on_batch: BatchCallback | None = None, progress: bool = False) -> dict:
    """Per-exit accuracy and cost of `model` (an AnytimeHRNet) on an evaluation `dataset` (datasets.build_dataset
    with train=False). Returns the content of metrics.json (see the module docstring).

    Segmentation runs one image per batch unless `batch_size` is given (images keep their own sizes). Pose uses the
    flip test unless `flip_test=False`. `max_images` evaluates the first N samples only. `on_batch(batch, exits)` is
    called after each batch with the exits' `ExitOutput`s. Under an initialised torch.distributed process group every
    rank evaluates every world_size-th sample and the counts are summed over ranks, so every rank returns the
    split's result. The model's train/eval mode is restored afterwards."""
    from torch.utils.data import DataLoader, Subset

    from ..data.datasets import collate

    _check_compatible(model, dataset)
    device = torch.device(device) if device is not None else next(model.parameters()).device
    rank, world = _rank_and_world()
    count = len(dataset) if max_images is None else min(len(dataset), int(max_images))
    if count < 1:
        raise ValueError(f"dataset {dataset!r} has no samples to evaluate")
    shard = Subset(dataset, range(rank, count, world))
    task = dataset.task
    if batch_size is None:
        batch_size = 1 if task == "seg" else DEFAULT_POSE_BATCH
    loader = DataLoader(shard, batch_size=batch_size, shuffle=False, num_workers=num_workers, collate_fn=collate)
    num_exits = model.num_exits
    costs = ExitCostMeter(num_exits)
    if task == "seg":
        scores = [ConfusionMatrix(dataset.num_classes, dataset.ignore_index, device=device) for _ in range(num_exits)]
    else:
        scores = [PCKhAccumulator(dataset.num_joints) for _ in range(num_exits)]
    batches = loader
    if progress and rank == 0:
        try:
            from tqdm import tqdm

            batches = tqdm(loader, desc="evaluate", unit="batch")
        except ImportError:
            pass

    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for batch in batches:
                if task == "seg":
                    outputs = _segmentation_batch(model, batch, device, scores)
                else:
                    outputs = _pose_batch(model, dataset, batch, device, scores, flip_test)
                for out in outputs:
                    costs.update(out.index, out.gflops, out.computed_fraction)
                if on_batch is not None:
                    on_batch(batch, outputs)
    finally:
        model.train(was_training)

    images = torch.tensor([float(len(shard))], dtype=torch.float64)
    for meter in (*scores, costs):
        meter.all_reduce()
    sum_across_ranks(images)
    return _summary(dataset, scores, costs, int(images.item()), flip_test if task == "pose" else None)


def _segmentation_batch(model, batch: dict, device, matrices: Sequence[ConfusionMatrix]) -> list[ExitOutput]:
    images = batch["image"].to(device)
    labels = batch["label"].to(device)
    outputs = []
    for result in model.anytime(images):
        predicted = matrices[result.index - 1].update_from_logits(result.logits.float(), labels)
        outputs.append(ExitOutput(result.index, result.confidence, result.compute_mask, result.computed_fraction,
                                  result.gflops, labels=predicted))
    return outputs


def _pose_batch(model, dataset, batch: dict, device, accumulators: Sequence[PCKhAccumulator],
                flip_test: bool) -> list[ExitOutput]:
    from ..data.transforms import to_original

    images = batch["image"].to(device)
    b = images.shape[0]
    meta = batch["meta"]
    centers = np.stack([np.asarray(m["center"], np.float64) for m in meta])
    scales = np.stack([np.asarray(m["scale"], np.float64) for m in meta])
    joints = torch.from_numpy(np.stack([np.asarray(m["joints"], np.float64) for m in meta]))
    head_boxes = torch.from_numpy(np.stack([np.asarray(m["head_box"], np.float64) for m in meta]))
    # The flipped copies run in the same batch: masks are per image, so each copy adapts on its own.
    inputs = torch.cat([images, images.flip(-1)]) if flip_test else images
    outputs = []
    for result in model.anytime(inputs):
        heatmaps = result.logits.float()
        gflops, fraction = result.gflops, result.computed_fraction
        if flip_test:
            heatmaps = flip_test_average(heatmaps[:b], heatmaps[b:], dataset.flip_pairs)
            gflops, fraction = gflops.view(2, b).mean(0), fraction.view(2, b).mean(0)
        heatmaps = heatmaps.cpu()
        on_heatmap, _ = decode_heatmaps(heatmaps, tuple(heatmaps.shape[-2:]))
        keypoints = to_original(on_heatmap.numpy(), centers, scales, tuple(heatmaps.shape[-2:]))
        accumulators[result.index - 1].update(torch.from_numpy(keypoints), joints[..., :2], joints[..., 2] > 0,
                                              head_boxes)
        mask = result.compute_mask[:b] if result.compute_mask is not None else None
        outputs.append(ExitOutput(result.index, result.confidence[:b], mask, fraction, gflops, heatmaps=heatmaps,
                                  keypoints=keypoints))
    return outputs


def _finite_or_none(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _summary(dataset, scores, costs: ExitCostMeter, images: int, flip_test: bool | None) -> dict:
    exits = []
    for index, (score, cost) in enumerate(zip(scores, costs.means()), start=1):
        row = {"exit": index}
        if dataset.task == "seg":
            row.update(miou=score.miou(), iou=[float(v) for v in score.iou()],
                       pixel_accuracy=score.pixel_accuracy())
        else:
            row.update(pckh=_finite_or_none(score.mean() / 100.0),
                       per_joint=[_finite_or_none(float(v) / 100.0) for v in score.per_joint()],
                       groups={k: _finite_or_none(v / 100.0) for k, v in score.groups().items()})
        row.update(gflops=cost.gflops, computed_fraction=cost.computed_fraction)
        exits.append(row)
    metric = "miou" if dataset.task == "seg" else "pckh"
    values = [e[metric] for e in exits]
    summary = {
        "task": dataset.task,
        "metric": metric,
        "images": images,
        "exits": exits,
        "mean_over_exits": {metric: sum(values) / len(values) if None not in values else None,
                            "gflops": sum(e["gflops"] for e in exits) / len(exits)},
    }
    if dataset.task == "seg":
        summary["class_names"] = list(dataset.class_names)
    else:
        summary["joint_names"] = list(dataset.joint_names)
        summary["flip_test"] = bool(flip_test)
    return summary


# ----- prediction files and figures -----------------------------------------------------------------------------------
def _train_id_to_label_id(dataset) -> np.ndarray | None:
    """For Cityscapes, the lookup from training ids to the label ids the official tools read; None otherwise."""
    from ..data.cityscapes import CityscapesDataset, label_id_to_train_id

    if not isinstance(dataset, CityscapesDataset):
        return None
    to_train = label_id_to_train_id()
    table = np.zeros(256, dtype=np.uint8)
    for label_id, train_id in enumerate(to_train):
        if train_id != dataset.ignore_index:
            table[train_id] = label_id
    return table


class SegmentationPredictionWriter:
    """Writes each exit's labels as PNGs: predictions/exit{k}/{name}.png, in Cityscapes label ids for Cityscapes (the
    official results format) and in the dataset's class ids otherwise."""

    def __init__(self, root: Path, dataset):
        self.root = Path(root)
        self.table = _train_id_to_label_id(dataset)

    def __call__(self, batch: dict, exits: list[ExitOutput]) -> None:
        import cv2

        for out in exits:
            labels = out.labels.cpu().numpy().astype(np.uint8)
            if self.table is not None:
                labels = self.table[labels]
            for name, image in zip(batch["name"], labels):
                path = self.root / f"exit{out.index}" / f"{name}.png"
                path.parent.mkdir(parents=True, exist_ok=True)
                if not cv2.imwrite(str(path), image):
                    raise OSError(f"could not write prediction {path}")


class PosePredictionWriter:
    """Collects each exit's keypoints and writes predictions/exit{k}.json on `close()`: per person its dataset
    index, name and 16 [x, y, heatmap peak] in original image pixels (0-based)."""

    def __init__(self, root: Path, rank: int = 0, world: int = 1):
        self.root = Path(root)
        self.suffix = "" if world == 1 else f".rank{rank}"
        self.people: dict[int, list[dict]] = {}

    def __call__(self, batch: dict, exits: list[ExitOutput]) -> None:
        for out in exits:
            peaks = out.heatmaps.flatten(2).max(dim=2).values.numpy()
            for meta, xy, peak in zip(batch["meta"], out.keypoints, peaks):
                joints = [[float(x), float(y), float(p)] for (x, y), p in zip(xy, peak)]
                self.people.setdefault(out.index, []).append(
                    {"index": int(meta["index"]), "name": meta["name"], "joints": joints})

    def close(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        for index, people in self.people.items():
            path = self.root / f"exit{index}{self.suffix}.json"
            path.write_text(json.dumps({"exit": index, "people": people}) + "\n", encoding="utf-8")


def _denormalize(image: Tensor) -> np.ndarray:
    """(3, H, W) ImageNet-normalised RGB -> (H, W, 3) uint8."""
    from ..models.configs import IMAGENET_MEAN, IMAGENET_STD

    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    rgb = (image.detach().float().cpu() * std + mean).clamp(0, 1) * 255.0
    return rgb.round().to(torch.uint8).permute(1, 2, 0).numpy()


class ExitFigureWriter:
    """Draws the paper's Fig. 5 for the first `limit` images: visualize/{name}.png (pose: {index}_{name}.png, '/' in
    names becoming '_')."""

    def __init__(self, root: Path, dataset, limit: int, title: str = ""):
        self.root = Path(root)
        self.dataset = dataset
        self.left = int(limit)
        self.title = title

    def __call__(self, batch: dict, exits: list[ExitOutput]) -> None:
        from .plots import ExitPanel, save_exit_strip

        for i in range(batch["image"].shape[0]):
            if self.left <= 0:
                return
            self.left -= 1
            self.root.mkdir(parents=True, exist_ok=True)
            image = _denormalize(batch["image"][i])
            if self.dataset.task == "seg":
                name = batch["name"][i]
                panels, image, truth = self._segmentation_panels(image, batch["label"][i], exits, i)
                save_exit_strip(self.root / f"{name.replace('/', '_')}.png", image, panels, truth_rgb=truth,
                                title=f"{self.title} {name}".strip())
            else:
                from ..data.labels import MPII_SKELETON

                meta = batch["meta"][i]
                size = tuple(image.shape[:2])
                panels = []
                for out in exits:
                    keypoints, _ = decode_heatmaps(out.heatmaps[i:i + 1], size)
                    panels.append(ExitPanel(out.index, image, out.confidence[i].float().cpu().numpy(),
                                            _mask_or_none(out, i), keypoints=keypoints[0].numpy()))
                stem = f"{int(meta['index']):05d}_{meta['name'].replace('/', '_')}"
                save_exit_strip(self.root / f"{stem}.png", image, panels, skeleton=MPII_SKELETON,
                                title=f"{self.title} {meta['name']}".strip(), confidence_range=None,
                                confidence_label="heatmap peak")

    def _segmentation_panels(self, image: np.ndarray, truth: Tensor, exits: list[ExitOutput], index: int):
        from .plots import ExitPanel, colorize, overlay

        truth = truth.cpu().numpy()
        if image.shape[:2] != truth.shape:  # --input-size: show everything at the label's size
            import cv2

            image = cv2.resize(image, (truth.shape[1], truth.shape[0]), interpolation=cv2.INTER_LINEAR)
        colors = np.asarray(self.dataset.colors, dtype=np.uint8)
        labelled = truth != self.dataset.ignore_index
        truth_rgb = colorize(np.where(labelled, truth, 0), colors)
        truth_rgb[~labelled] = 0
        panels = []
        for out in exits:
            labels = out.labels[index].cpu().numpy()
            correct = labels == truth
            accuracy = float(np.mean(correct[labelled])) if labelled.any() else float("nan")
            panels.append(ExitPanel(out.index, overlay(image, colorize(labels, colors)),
                                    out.confidence[index].float().cpu().numpy(), _mask_or_none(out, index),
                                    correct=correct,
                                    labelled=labelled, caption=f"pixel acc. {100 * accuracy:.1f}%"))
        return panels, image, truth_rgb


def _mask_or_none(out: ExitOutput, i: int) -> np.ndarray | None:
    return None if out.compute_mask is None else out.compute_mask[i].cpu().numpy() > 0.5


# ----- reports --------------------------------------------------------------------------------------------------------
def metrics_table(metrics: dict) -> list[list[str]]:
    """The printed table: one row per exit and the mean over exits, accuracies in %."""
    metric = metrics["metric"]
    head = "mIoU %" if metric == "miou" else "PCKh@0.5 %"
    rows = [["exit", head, "GFLOPs", "computed %"]]
    for e in metrics["exits"]:
        value = e[metric]
        rows.append([str(e["exit"]), "n/a" if value is None else f"{100 * value:.2f}", f"{e['gflops']:.2f}",
                     f"{100 * e['computed_fraction']:.1f}"])
    if len(metrics["exits"]) > 1:
        mean = metrics["mean_over_exits"]
        rows.append(["mean", "n/a" if mean[metric] is None else f"{100 * mean[metric]:.2f}", f"{mean['gflops']:.2f}",
                     ""])
    return rows


def format_table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.rjust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


def write_metrics_csv(path: Path, metrics: dict) -> None:
    """metrics.csv: one row per exit with the same numbers as metrics.json (fractions), then per class / joint."""
    metric = metrics["metric"]
    if metric == "miou":
        names = [f"iou_{n}" for n in metrics["class_names"]]
        extra = ["pixel_accuracy"]
    else:
        names = [f"pckh_{n}" for n in metrics["joint_names"]]
        extra = []
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["exit", metric, *extra, "gflops", "computed_fraction", *names])
        for e in metrics["exits"]:
            detail = e["iou"] if metric == "miou" else e["per_joint"]
            writer.writerow([e["exit"], e[metric], *(e[k] for k in extra), e["gflops"], e["computed_fraction"],
                             *("" if v is None else v for v in detail)])


def write_reports(output: Path, metrics: dict, model_name: str, dataset_name: str,
                  paper_comparable: bool = True) -> None:
    """metrics.json, metrics.csv and accuracy_vs_gflops.png in `output`; the paper's points are drawn when it
    reports `model_name` on `dataset_name` and `paper_comparable` (inputs at the paper's sizes)."""
    from .plots import paper_points, save_accuracy_vs_gflops

    output.mkdir(parents=True, exist_ok=True)
    (output / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n", encoding="utf-8")
    write_metrics_csv(output / "metrics.csv", metrics)
    metric = metrics["metric"]
    accuracy = [100.0 * (e[metric] if e[metric] is not None else float("nan")) for e in metrics["exits"]]
    # The paper reports Cityscapes and MPII only; its points beside another dataset's would compare nothing.
    paper = paper_points(model_name) if paper_comparable and dataset_name in ("cityscapes", "mpii") else []
    save_accuracy_vs_gflops(output / "accuracy_vs_gflops.png", model_name, metric,
                            [e["gflops"] for e in metrics["exits"]], accuracy, paper=paper,
                            title=f"{model_name} on {dataset_name} {metrics.get('split', '')}".rstrip())


# ----- command line ---------------------------------------------------------------------------------------------------
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", required=True, help="registered model name, e.g. adpc_hrnet_w48_seg (see `list`)")
    parser.add_argument("--checkpoint", required=True, help="weights in any supported layout (see README)")
    parser.add_argument("--dataset", required=True, help="cityscapes, mpii, folder or folder_pose")
    parser.add_argument("--data-root", required=True, type=Path, help="the dataset's root folder")
    parser.add_argument("--split", default="val", help="split to evaluate (default: val)")
    parser.add_argument("--output", required=True, type=Path, help="folder for metrics, plots and predictions")
    parser.add_argument("--input-size", type=parse_size, default=None,
                        help="HxW to resize images to (seg; default: every image at its own size, as the authors) "
                             "or the pose crop size (default 256x256)")
    parser.add_argument("--save-predictions", action="store_true",
                        help="write every exit's predictions (Cityscapes: results format in label ids)")
    parser.add_argument("--visualize", type=int, default=0, metavar="N",
                        help="draw the paper's Fig. 5 for the first N images")
    parser.add_argument("--no-flip-test", dest="flip_test", action="store_false",
                        help="pose: skip the flip test (the paper's numbers use it)")
    parser.add_argument("--max-images", type=int, default=None, metavar="N", help="evaluate the first N samples only")
    parser.add_argument("--batch-size", type=int, default=None,
                        help=f"images per forward (default: 1 for seg, {DEFAULT_POSE_BATCH} for pose)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes (default: 2)")
    parser.add_argument("--device", default=None, help="cpu, cuda or cuda:N (default: cuda if available)")
    parser.add_argument("--override", action="append", default=[], metavar="KEY=VALUE",
                        help="model override, e.g. conf_threshold=0.99 or num_classes=2 (repeatable)")


def _parse_overrides(items: Sequence[str]) -> dict:
    overrides = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--override must look like KEY=VALUE, got {item!r}")
        try:
            value = json.loads(text)
        except json.JSONDecodeError:
            value = text  # a bare word, e.g. criterion=neg_entropy
        overrides[key.strip()] = tuple(value) if isinstance(value, list) else value
    return overrides


def run(args: argparse.Namespace) -> int:
    from ..data.datasets import build_dataset
    from ..models import create_model
    from ..models.checkpoint import CheckpointError

    if args.visualize < 0 or (args.max_images is not None and args.max_images < 1):
        print("error: --visualize must be >= 0 and --max-images >= 1", file=sys.stderr)
        return 2
    world = int(os.environ.get("WORLD_SIZE", "1"))
    device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if world > 1 and not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
        if device.type == "cuda":
            device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
            torch.cuda.set_device(device)
    rank, world = _rank_and_world()
    try:
        model = create_model(args.model, checkpoint=args.checkpoint, device=device,
                             **_parse_overrides(args.override))
        dataset = build_dataset(args.dataset, args.data_root, args.split, train=False, input_size=args.input_size)
        _check_compatible(model, dataset)
    except (ValueError, FileNotFoundError, CheckpointError, ImportError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2

    callbacks: list[BatchCallback] = []
    writer = None
    if args.save_predictions:
        if dataset.task == "seg":
            writer = SegmentationPredictionWriter(args.output / "predictions", dataset)
        else:
            writer = PosePredictionWriter(args.output / "predictions", rank, world)
        callbacks.append(writer)
    if args.visualize and rank == 0:
        callbacks.append(ExitFigureWriter(args.output / "visualize", dataset, args.visualize, title=args.model))

    def on_batch(batch: dict, exits: list[ExitOutput]) -> None:
        for callback in callbacks:
            callback(batch, exits)

    started = time.monotonic()
    metrics = evaluate_model(model, dataset, device=device, flip_test=args.flip_test, batch_size=args.batch_size,
                             num_workers=args.workers, max_images=args.max_images, on_batch=on_batch, progress=True)
    if isinstance(writer, PosePredictionWriter):
        writer.close()
    metrics.update(model=args.model, checkpoint=str(args.checkpoint), dataset=args.dataset, split=args.split,
                   input_size=list(args.input_size) if args.input_size else None,
                   seconds=round(time.monotonic() - started, 1))
    if rank != 0:
        return 0
    # The paper's GFLOPs are at full Cityscapes size and 256x256 MPII crops: beside other sizes they mislead.
    paper_size = args.input_size is None or (dataset.task == "pose" and tuple(args.input_size) == (256, 256))
    write_reports(args.output, metrics, args.model, args.dataset, paper_comparable=paper_size)
    size = "x".join(map(str, args.input_size)) if args.input_size else "each image at its own size"
    print(f"{args.model} on {args.dataset} {args.split}: {metrics['images']} images ({size})")
    print(format_table(metrics_table(metrics)))
    print(f"wrote {args.output / 'metrics.json'}, metrics.csv, accuracy_vs_gflops.png")
    return 0
