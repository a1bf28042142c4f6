"""`anytime-perception train`: train any registered model on Cityscapes, MPII or a folder of your own labels.

  anytime-perception train --config config/train/adpc_hrnet_w18s_seg.yaml --data-root data/cityscapes \\
      --output runs/w18s --init hrnet_w18_small_model_v2.pth
  torchrun --nproc_per_node 4 -m anytime_perception.cli train --config ... --device cuda

Every exit is trained at once (per-exit losses on the carried-over logits, summed with exit weights); adpc_ models
train with confidence adaptivity on (gradients through carry-over and the RBF fill, Lambda learned), optionally from
`--ca-start-iter` on. A run folder holds `config.yaml` (the resolved settings), `log.jsonl` (one JSON object per
logged iteration: iter, loss, loss_exit1.., lr, img_per_s, data_share), `checkpoint_last.pth` (everything needed to
continue exactly: model, optimiser, scheduler, scaler, iteration, every RNG) and, at the end, `model_final.pth` in the
package's native format, which `create_model(name, checkpoint=...)` and the ROS node load. Before `model_final.pth`
is written, the BatchNorm statistics are recomputed over `--precise-bn-batches` training batches: with the authors'
BN momentum (0.01) the running statistics of a short run are far from the data, and eval-mode predictions are
wrong until they are recomputed. `--resume` continues the run in `--output` up to its `--iters` (or a longer
`--iters`); Ctrl-C or SIGTERM stops at the next iteration with a checkpoint, and so does `--stop-at N`.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import random
import signal
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import Tensor, nn

from .config import TrainConfig, add_config_arguments, resolve_config, save_config

TRAIN_STATE_FORMAT = "anytime_perception/train-state/1"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        config = resolve_config(args)
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        train(config)
    except TrainingError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


class TrainingError(RuntimeError):
    """A run that cannot start or go on (bad data, diverged loss); the message says why."""


# ----- processes ---------------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Processes:
    rank: int
    world_size: int
    device: torch.device

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_processes(device_kind: str) -> Processes:
    """One process, or the process group that `torchrun` describes in the environment (gloo on CPU, nccl on GPU)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if device_kind == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda, but no CUDA device is available to this PyTorch")
    if world_size == 1:
        return Processes(0, 1, torch.device("cuda" if device_kind == "cuda" else "cpu"))
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device_kind == "cuda" else "gloo")
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device_kind == "cuda":
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    return Processes(dist.get_rank(), dist.get_world_size(), device)


def mean_over_processes(values: Tensor, procs: Processes) -> Tensor:
    if procs.distributed:
        values = values.to(procs.device)
        dist.all_reduce(values)
        values = values / procs.world_size
    return values.cpu()


# ----- data ---------------------------------------------------------------------------------------------------------
class ResumableSampler(torch.utils.data.DistributedSampler):
    """DistributedSampler (a seeded shuffle per epoch, each process its share) that can start mid-epoch, so a
    resumed run sees exactly the samples the interrupted one would have seen next."""

    def __init__(self, dataset, num_replicas: int, rank: int, seed: int):
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=True)
        self.start = 0

    def start_at(self, epoch: int, sample: int) -> None:
        self.set_epoch(epoch)
        self.start = sample

    def __iter__(self):
        return iter(list(super().__iter__())[self.start:])

    def __len__(self) -> int:
        return super().__len__() - self.start


def build_training_data(config: TrainConfig, procs: Processes):
    from ..data.base import PoseDataset
    from ..data.datasets import DATASETS, build_dataset, collate, worker_init_fn

    if DATASETS.get(config.dataset) is not None and issubclass(DATASETS[config.dataset], PoseDataset):
        options = {"input_size": config.crop}
    else:
        options = {"crop_size": config.crop, "base_size": config.base_size}
        if config.scale_range is not None:
            options["scale_range"] = config.scale_range
    try:
        dataset = build_dataset(config.dataset, config.data_root, config.split, train=True, seed=config.seed,
                                **options)
    except (FileNotFoundError, ValueError) as exc:
        raise TrainingError(str(exc)) from exc
    sampler = ResumableSampler(dataset, procs.world_size, procs.rank, config.seed)
    batches_per_epoch = len(sampler) // config.batch_size
    if batches_per_epoch < 1:
        raise TrainingError(f"{config.data_root} ({config.split}) has {len(dataset)} sample(s): too few for one batch "
                            f"of {config.batch_size} on each of {procs.world_size} process(es)")
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=config.batch_size, sampler=sampler, num_workers=config.workers, collate_fn=collate,
        worker_init_fn=worker_init_fn, drop_last=True, pin_memory=procs.device.type == "cuda",
        # workers restart every epoch so that they see the dataset's new epoch (augmentations are drawn per
        # (seed, epoch, index))
        persistent_workers=False)
    return dataset, sampler, loader, batches_per_epoch


# ----- model, loss, optimisation --------------------------------------------------------------------------------------
class ExitOutputs(nn.Module):
    """Every exit's output of the anytime model, as one forward that DistributedDataParallel can wrap."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, images: Tensor, adaptive: bool) -> list[Tensor]:
        return [result.logits for result in self.model.anytime(images, adaptive=adaptive)]


def build_model(config: TrainConfig, dataset) -> nn.Module:
    from ..models import create_model, model_config

    task = model_config(config.model).task
    if task != dataset.task:
        raise TrainingError(f"model {config.model} is a {task} model but dataset {config.dataset} is for {dataset.task}")
    outputs = config.num_classes or (dataset.num_classes if task == "seg" else dataset.num_joints)
    model = create_model(config.model, num_classes=outputs)
    if config.init:
        from ..models.checkpoint import CheckpointError, load_checkpoint

        try:
            load_checkpoint(model, config.init)
        except (CheckpointError, FileNotFoundError) as exc:
            raise TrainingError(f"--init: {exc}") from exc
    elif config.prior_bias and task == "seg":
        set_prior_bias(model, dataset)
    if config.bn_momentum is not None:
        for bn in batch_norms(model):
            bn.momentum = config.bn_momentum
    return model.train()


PRIOR_IMAGES = 200  # labels read (evenly spaced over the split) to estimate class frequencies for --prior-bias
MIN_FREQUENCY = 1e-4


def set_prior_bias(model: nn.Module, dataset) -> None:
    """Every exit classifier's bias := log(class frequency), so the untrained model predicts the label prior and the
    first updates do not have to push a rare class down everywhere."""
    count = min(len(dataset), PRIOR_IMAGES)
    counts = np.zeros(dataset.num_classes, np.float64)
    for index in np.linspace(0, len(dataset) - 1, count).round().astype(int):
        _, label = dataset.load(int(index))
        valid = label[label != dataset.ignore_index]
        counts += np.bincount(valid.ravel(), minlength=dataset.num_classes)[: dataset.num_classes]
    frequencies = np.maximum(counts / max(counts.sum(), 1.0), MIN_FREQUENCY)
    bias = torch.from_numpy(np.log(frequencies)).float()
    with torch.no_grad():
        for index in range(1, model.num_exits + 1):
            model.exit_classifier(index).bias.copy_(bias)
    print(f"classifier biases set to the log class frequencies of {count} training labels: "
          + ", ".join(f"{f:.4f}" for f in frequencies), file=sys.stderr)


def batch_norms(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def build_optimizer(config: TrainConfig, model: nn.Module, total_iters: int):
    params = [p for p in model.parameters() if p.requires_grad]
    if config.optimizer == "sgd":
        optimizer = torch.optim.SGD(params, lr=config.lr, momentum=config.momentum, weight_decay=config.weight_decay)
    else:  # the authors' pose recipe: Adam without weight decay
        optimizer = torch.optim.Adam(params, lr=config.lr)
    if config.lr_schedule == "poly":
        def factor(it: int) -> float:  # lr for the step after `it` steps, as the authors set it after each step
            return (1 - min(it, total_iters) / total_iters) ** config.poly_power
    else:
        milestones = sorted(round(f * total_iters) for f in config.lr_steps)

        def factor(it: int) -> float:
            return config.lr_step_factor ** sum(it >= m for m in milestones)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, factor)


def autocast_dtype(amp: str, device: torch.device) -> torch.dtype | None:
    """`auto`: bf16 where the hardware computes it natively (AMX/AVX512-BF16 CPUs, Ampere+ GPUs), fp16 on older GPUs,
    fp32 elsewhere (bf16 emulated on an AVX2 CPU is slower than fp32)."""
    if amp == "none":
        return None
    if amp == "bf16":
        return torch.bfloat16
    if amp == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.bfloat16 if torch.ops.mkldnn._is_mkldnn_bf16_supported() else None


def build_loss(config: TrainConfig, dataset, num_exits: int) -> nn.Module:
    from ..tasks.losses import build_loss as make

    weights = config.exit_weights or (1.0,) * num_exits
    class_weights = getattr(dataset, "class_weights", None) if config.class_weights == "dataset" else None
    return make(dataset.task, weights, class_weights, getattr(dataset, "ignore_index", 255))


# ----- state ----------------------------------------------------------------------------------------------------------
def rng_state(device: torch.device) -> dict:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if device.type == "cuda":
        state["cuda"] = torch.cuda.get_rng_state(device)
    return state


def set_rng_state(state: dict, device: torch.device) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if device.type == "cuda" and "cuda" in state:
        torch.cuda.set_rng_state(state["cuda"], device)


def save_train_state(path: Path, iteration: int, model, optimizer, scheduler, scaler, rng: list[dict],
                     config: TrainConfig) -> None:
    tmp = path.with_suffix(".tmp")  # a crash while writing keeps the previous checkpoint intact
    torch.save({"format": TRAIN_STATE_FORMAT, "iteration": iteration, "model": model.state_dict(),
                "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(), "rng": rng, "config": dataclasses.asdict(config)}, tmp)
    os.replace(tmp, path)


def gather_rng(procs: Processes) -> list[dict]:
    state = rng_state(procs.device)
    if not procs.distributed:
        return [state]
    states: list = [None] * procs.world_size
    dist.all_gather_object(states, state)
    return states


def truncate_log(log_path: Path, iteration: int) -> None:
    """Drop log lines past the checkpoint a resumed run restarts from (they will be logged again)."""
    if not log_path.is_file():
        return
    kept = [line for line in log_path.read_text().splitlines() if line and json.loads(line)["iter"] <= iteration]
    log_path.write_text("".join(line + "\n" for line in kept))


# ----- the loop -------------------------------------------------------------------------------------------------------
class StopRequest:
    """Ctrl-C / SIGTERM ask the loop to stop after the current iteration with a checkpoint."""

    def __init__(self):
        self.requested = False
        self._previous = {}

    def __enter__(self):
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                self._previous[sig] = signal.signal(sig, self._handle)
            except ValueError:  # not the main thread: no handler, the default behaviour stays
                pass
        return self

    def _handle(self, signum, frame) -> None:
        self.requested = True

    def __exit__(self, *exc):
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


def train(config: TrainConfig) -> Path:
    """Run (or continue) a training run; returns the path of `model_final.pth` (or of the last checkpoint when the
    run was stopped early)."""
    procs = init_processes(config.device)
    try:
        return _train(config, procs)
    finally:
        if procs.distributed and dist.is_initialized():
            dist.destroy_process_group()


def _train(config: TrainConfig, procs: Processes) -> Path:
    output = Path(config.output)
    torch.manual_seed(config.seed + procs.rank)
    np.random.seed((config.seed + procs.rank) % 2**32)
    random.seed(config.seed + procs.rank)

    dataset, sampler, loader, batches_per_epoch = build_training_data(config, procs)
    total_iters = config.iters or config.epochs * batches_per_epoch
    model = build_model(config, dataset).to(procs.device)
    loss_fn = build_loss(config, dataset, model.num_exits).to(procs.device)
    optimizer, scheduler = build_optimizer(config, model, total_iters)
    amp_dtype = autocast_dtype(config.amp, procs.device)
    scaler = torch.amp.GradScaler(procs.device.type, enabled=amp_dtype == torch.float16)

    state_path, log_path, final_path = output / "checkpoint_last.pth", output / "log.jsonl", output / "model_final.pth"
    start = 0
    if config.resume:
        state = torch.load(state_path, map_location=procs.device, weights_only=False)
        if state.get("format") != TRAIN_STATE_FORMAT:
            raise TrainingError(f"{state_path} is not a training checkpoint of this package")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        start = state["iteration"]
        if len(state["rng"]) == procs.world_size:
            set_rng_state(state["rng"][procs.rank], procs.device)
        if procs.is_main:
            truncate_log(log_path, start)
    elif procs.is_main:
        output.mkdir(parents=True, exist_ok=True)
        if state_path.exists():
            raise TrainingError(f"{output} already holds a run (checkpoint_last.pth): pass --resume to continue it, "
                                f"or choose another --output")
        save_config(config, output / "config.yaml")
        log_path.write_text("")

    forward = ExitOutputs(model)
    if procs.distributed:
        if procs.device.type == "cuda":
            forward = nn.SyncBatchNorm.convert_sync_batchnorm(forward)
        # Lambda (the RBF fill) has no gradient while confidence adaptivity is still off
        forward = nn.parallel.DistributedDataParallel(
            forward, device_ids=[procs.device.index] if procs.device.type == "cuda" else None,
            find_unused_parameters=config.ca_start_iter > 0 and model.config.confidence_adaptive)
    autocast = (lambda: torch.autocast(procs.device.type, dtype=amp_dtype)) if amp_dtype else nullcontext

    progress = None
    if procs.is_main:
        from tqdm import tqdm

        progress = tqdm(total=total_iters, initial=start, unit="it", dynamic_ncols=True,
                        desc=f"train {config.model}", disable=None)
    it = start
    stop_at = config.stop_at
    interval = {"images": 0, "data": 0.0, "start": time.perf_counter()}
    with StopRequest() as stop:
        while it < total_iters and not stop.requested:
            epoch, batch_index = divmod(it, batches_per_epoch)
            dataset.set_epoch(epoch)
            sampler.start_at(epoch, batch_index * config.batch_size)
            fetch_start = time.perf_counter()
            for batch in loader:
                interval["data"] += time.perf_counter() - fetch_start
                batch = to_device(batch, procs.device)
                images = batch["image"]
                adaptive = it >= config.ca_start_iter
                with autocast():
                    outputs = forward(images, adaptive)
                loss, per_exit = loss_fn(outputs, batch)
                if not torch.isfinite(loss):
                    raise TrainingError(f"loss became {loss.item()} at iteration {it + 1} (exit losses "
                                        f"{[round(float(x), 4) for x in per_exit]}); lower --lr or check the labels")
                optimizer.zero_grad(set_to_none=True)
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
                scheduler.step()
                it += 1
                interval["images"] += images.shape[0] * procs.world_size

                if it % config.log_every == 0 or it == total_iters:
                    values = mean_over_processes(torch.stack([loss.detach().float()] +
                                                             [x.detach().float() for x in per_exit]), procs)
                    elapsed = time.perf_counter() - interval["start"]
                    record = {"iter": it, "epoch": epoch, "loss": float(values[0]),
                              **{f"loss_exit{k}": float(v) for k, v in enumerate(values[1:], start=1)},
                              "lr": optimizer.param_groups[0]["lr"], "img_per_s": interval["images"] / elapsed,
                              "data_share": interval["data"] / elapsed}
                    if procs.is_main:
                        with log_path.open("a") as f:
                            f.write(json.dumps(record) + "\n")
                        progress.set_postfix(loss=f"{record['loss']:.4f}", img_s=f"{record['img_per_s']:.2f}")
                    interval = {"images": 0, "data": 0.0, "start": time.perf_counter()}
                if progress is not None:
                    progress.update(1)
                requested = stop_requested(stop.requested or it == stop_at, procs)
                if it % config.checkpoint_every == 0 or it == total_iters or requested:
                    save_state(state_path, it, model, optimizer, scheduler, scaler, config, procs)
                if requested:
                    stop.requested = True
                if it >= total_iters or stop.requested:
                    break
                fetch_start = time.perf_counter()
    if progress is not None:
        progress.close()
    if it < total_iters:
        if procs.is_main:
            print(f"stopped at iteration {it} of {total_iters}; continue with --resume --output {output}",
                  file=sys.stderr)
        return state_path

    precise_bn(model, config, dataset, procs, autocast, epoch=math.ceil(total_iters / batches_per_epoch))
    if procs.is_main:
        from ..models.checkpoint import save_checkpoint

        save_checkpoint(model, final_path, **final_metadata(config, dataset, total_iters))
        print(f"wrote {final_path}", file=sys.stderr)
    return final_path


def stop_requested(local: bool, procs: Processes) -> bool:
    """Every process stops at the same iteration (a signal may reach them between different steps)."""
    if not procs.distributed:
        return local
    flag = torch.tensor([1.0 if local else 0.0], device=procs.device)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return bool(flag.item())


def save_state(path: Path, it: int, model, optimizer, scheduler, scaler, config: TrainConfig,
               procs: Processes) -> None:
    rng = gather_rng(procs)
    if procs.is_main:
        save_train_state(path, it, model, optimizer, scheduler, scaler, rng, config)


def to_device(batch: dict, device: torch.device) -> dict:
    return {k: v.to(device, non_blocking=True) if isinstance(v, Tensor) else v for k, v in batch.items()}


def precise_bn(model: nn.Module, config: TrainConfig, dataset, procs: Processes, autocast, epoch: int) -> None:
    """Recompute every BatchNorm's running statistics as the plain average over `precise_bn_batches` training
    batches (momentum None), with the training forward (confidence adaptivity as at the end of training), then
    average them over processes."""
    if config.precise_bn_batches <= 0:
        return
    from ..data.datasets import collate, worker_init_fn

    norms = batch_norms(model)
    momenta = [bn.momentum for bn in norms]
    for bn in norms:
        bn.reset_running_stats()
        bn.momentum = None
    sampler = ResumableSampler(dataset, procs.world_size, procs.rank, config.seed)
    dataset.set_epoch(epoch)
    sampler.start_at(epoch, 0)
    loader = torch.utils.data.DataLoader(dataset, batch_size=config.batch_size, sampler=sampler,
                                         num_workers=config.workers, collate_fn=collate, worker_init_fn=worker_init_fn,
                                         drop_last=True)
    batches = min(config.precise_bn_batches, len(loader))
    adaptive = model.config.confidence_adaptive  # as at the end of training (ca_start_iter is behind us)
    model.train()
    with torch.no_grad():
        for i, batch in enumerate(loader):
            if i >= batches:
                break
            with autocast():
                for _ in model.anytime(batch["image"].to(procs.device), adaptive=adaptive):
                    pass
    for bn, momentum in zip(norms, momenta):
        bn.momentum = momentum
        if procs.distributed:
            for stat in (bn.running_mean, bn.running_var):
                dist.all_reduce(stat)
                stat /= procs.world_size
    model.eval()
    if procs.is_main:
        print(f"BatchNorm statistics recomputed over {batches} batch(es) x {procs.world_size} process(es)",
              file=sys.stderr)


def final_metadata(config: TrainConfig, dataset, iters: int) -> dict:
    if dataset.task == "seg":
        labels = {"class_names": list(dataset.class_names), "colors": [list(c) for c in dataset.colors]}
    else:
        labels = {"joint_names": list(dataset.joint_names)}
    return {"labels": labels, "training": {"iters": iters, "dataset": config.dataset, "split": config.split,
                                           "model": config.model, **config.extra}}
