"""Wall-clock speed-up of sparse execution (`execution="sparse"`) against dense and the authors' emulation.

    .venv/bin/python benchmarks/sparse_speedup.py --quick        # smoke run, ~1 minute
    .venv/bin/python benchmarks/sparse_speedup.py                # everything (W48 at 1024x2048 included): long
    .venv/bin/python benchmarks/sparse_speedup.py --models adpc_hrnet_w48_seg --sizes 1024x2048 --dtypes fp32 \
        --masks synthetic --tables e2e                           # the acceptance row only
    .venv/bin/python benchmarks/sparse_speedup.py --calibrate    # per-layer dense-fallback thresholds

Tables:
1. per conv kind (HRNet-W48's units at the size): one unit = masked conv -> BN (-> + residual) (-> ReLU) at the
   paper's computed shares 0.82 / 0.63 / 0.38;
2. end to end per exit, cumulative time from the input to each exit, for each model / size / dtype / mask source;
3. nothing masked (threshold 1.0: every pixel computed): sparse mode against dense.

Modes, measured interleaved in one run (rotating order, fastest of the repeats: the machine may be shared):
- dense: the same weights as one dense HRNet, `adaptive=False`, BN folded into every conv (what the sparse backend
  does for its units), channels_last, eager;
- emulated: `execution="emulate"`, the authors' dense conv + mask + RBF fill;
- sparse: `execution="sparse"`.
Emulated and sparse models get BN folded into their never-masked convs (stem, layer1, exit 1) like the dense one.
FLOPs ratio = dense GFLOPs / adaptive GFLOPs (paper convention, per exit, as the model reports them); measured
ratio = dense ms / sparse ms; efficiency = measured / FLOPs ratio.

Masks: "synthetic" = class-boundary bands + blobs calibrated so per-exit GFLOPs match Table 1's ADP-C row (93.9 /
259.3 / 387.1 for W48 at 1024x2048; scaled by dense cost for other sizes; the same masks for W18s); "real" = the
model's own max-prob confidence (T = 0.998) on the shipped clip's frames, with untrained weights calibrated to the
paper's confident shares 0.18 / 0.37 / 0.62 (`calibrate_untrained`: no trained model ships yet).
glibc's mmap threshold is disabled for the whole run (M_MMAP_MAX = 0) so that no mode pays page faults for fresh
large buffers. Numbers depend on the machine and what else runs on it; the header prints the load.
"""
from __future__ import annotations

import argparse
import copy
import ctypes
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anytime_perception import create_model  # noqa: E402
from anytime_perception.models.blocks import conv_bn  # noqa: E402
from anytime_perception.models.masked_conv import EmulatedExecution, MaskedConv2d  # noqa: E402
from anytime_perception.models.masks import ComputeMask, mask_from_bool  # noqa: E402
from anytime_perception.models.sparse import SparseExecution, extension  # noqa: E402
from anytime_perception.models.sparse.benchmark_masks import (ScriptedCriterion, calibrate_to_gflops,  # noqa: E402
                                                              paper_targets, shipped_frames, synthetic_difficulty)
from anytime_perception.models.sparse.fold import fold_batchnorm  # noqa: E402
from anytime_perception.models.step_cost import masked_conv_macs, rbf_fill_units  # noqa: E402
from anytime_perception.models.untrained import PAPER_CONFIDENT_SHARES, calibrate_untrained, randomise_weights  # noqa: E402,E501

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
PAPER_SHARES = (0.82, 0.63, 0.38)
CALIBRATION_SHARES = (0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95)


def tune_allocator() -> bool:
    """Serve every allocation from the heap (no mmap, no trimming): fresh large buffers then cost no page faults."""
    try:
        libc = ctypes.CDLL("libc.so.6")
    except OSError:
        return False
    return bool(libc.mallopt(-4, 0)) and bool(libc.mallopt(-1, 2**31 - 1))  # M_MMAP_MAX, M_TRIM_THRESHOLD


class Progress:
    def __init__(self, total: int, enabled: bool = True):
        self.total, self.done, self.start, self.enabled = max(total, 1), 0, time.time(), enabled
        self.label = ""

    def step(self, label: str = "", n: int = 1) -> None:
        self.done += n
        self.label = label or self.label
        if self.enabled:
            frac = min(self.done / self.total, 1.0)
            bar = "#" * int(30 * frac) + "." * (30 - int(30 * frac))
            el = time.time() - self.start
            eta = el / frac - el if frac > 0 else 0
            sys.stderr.write(f"\r[{bar}] {100 * frac:5.1f}% {el:6.0f}s elapsed, ~{eta:5.0f}s left  {self.label[:50]:50s}")
            sys.stderr.flush()

    def close(self) -> None:
        if self.enabled:
            sys.stderr.write("\n")


def load_average() -> str:
    try:
        return " / ".join(open("/proc/loadavg").read().split()[:3])
    except OSError:
        return "?"


def table(headers: list[str], rows: list[list]) -> str:
    def fmt(v):
        return f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


# ----- end to end ----------------------------------------------------------------------------------------------
def timed_forward(model, images, adaptive: bool) -> tuple[list[float], list[float]]:
    times, gflops = [], []
    with torch.inference_mode():
        t0 = time.perf_counter()
        state = model.begin(images, adaptive)
        while not state.finished:
            result = model.advance(state)
            if result is not None:
                times.append((time.perf_counter() - t0) * 1e3)
                gflops.append(float(result.gflops.mean()))
    return times, gflops


def prepare_models(name: str, size, dtype, mask_source: str, masks=None, frames=None):
    """dense / emulated / sparse models with the same weights, channels_last, in `dtype`."""
    base = create_model(name)
    if mask_source == "real":
        calibrate_untrained(base, frames, PAPER_CONFIDENT_SHARES)
    else:
        randomise_weights(base, 0)
    models = {}
    for mode in ("dense", "emulated", "sparse"):
        m = create_model(name, execution="sparse" if mode == "sparse" else "emulate", conf_threshold=base.config.threshold)
        m.load_state_dict(base.state_dict())
        m.eval()
        fold_batchnorm(m, include_masked=mode == "dense")
        if mask_source == "synthetic":
            m.criterion = ScriptedCriterion(masks)
        models[mode] = m.to(dtype=dtype, memory_format=torch.channels_last)
    return models


def run_e2e(name: str, size, dtype_name: str, mask_source: str, repeats: int, progress: Progress,
            synthetic_cache: dict) -> list[list]:
    dtype = DTYPES[dtype_name]
    frames = None
    masks = None
    if mask_source == "synthetic":
        key = size
        if key not in synthetic_cache:
            cfg = create_model("adpc_hrnet_w48_seg").config
            difficulty = synthetic_difficulty(size[0] // 4, size[1] // 4)
            synthetic_cache[key] = calibrate_to_gflops(cfg, size, difficulty, paper_targets(cfg, size))
        masks = synthetic_cache[key][0]
        images = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
    else:
        frames = shipped_frames(size, count=1)
        images = frames
    models = prepare_models(name, size, dtype, mask_source, masks, images)
    images = images.to(dtype).contiguous(memory_format=torch.channels_last)
    modes = list(models)
    samples = {m: [] for m in modes}
    flops = {}
    for m in modes:  # warm-up: oneDNN primitives, buffers, folded weights
        timed_forward(models[m], images, adaptive=m != "dense")
        progress.step(f"{name} {size[0]}x{size[1]} {dtype_name} {mask_source}: warm-up {m}")
    for r in range(repeats):
        for m in modes[r % len(modes):] + modes[:r % len(modes)]:
            t, g = timed_forward(models[m], images, adaptive=m != "dense")
            samples[m].append(t)
            flops[m] = g
            progress.step()
    rows = []
    for k in range(len(samples["dense"][0])):
        med = {m: min(s[k] for s in samples[m]) for m in modes}  # min: robust to other processes
        fr = flops["dense"][k] / flops["sparse"][k]
        mr = med["dense"] / med["sparse"]
        rows.append([name.replace("adpc_hrnet_", ""), f"{size[0]}x{size[1]}", dtype_name, mask_source, k + 1,
                     med["dense"], med["emulated"], med["sparse"], fr, mr, mr / fr])
    return rows


def run_overhead(name: str, size, dtype_name: str, repeats: int, progress: Progress) -> list:
    dtype = DTYPES[dtype_name]
    base = create_model(name)
    randomise_weights(base, 0)
    models = {}
    for mode in ("dense", "sparse"):
        m = create_model(name, execution="sparse" if mode == "sparse" else "emulate", conf_threshold=1.0)
        m.load_state_dict(base.state_dict())
        m.eval()
        fold_batchnorm(m, include_masked=mode == "dense")
        models[mode] = m.to(dtype=dtype, memory_format=torch.channels_last)
    images = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0)).to(dtype)
    images = images.contiguous(memory_format=torch.channels_last)
    samples = {m: [] for m in models}
    for m in models:
        timed_forward(models[m], images, adaptive=m != "dense")
        progress.step(f"overhead {name} {size[0]}x{size[1]} {dtype_name}")
    for r in range(repeats):
        for m in (list(models) if r % 2 == 0 else list(models)[::-1]):
            samples[m].append(timed_forward(models[m], images, adaptive=m != "dense")[0][-1])
            progress.step()
    d, s = min(samples["dense"]), min(samples["sparse"])
    return [name.replace("adpc_hrnet_", ""), f"{size[0]}x{size[1]}", dtype_name, d, s, 100 * (s / d - 1)]


# ----- per conv kind -------------------------------------------------------------------------------------------
def conv_kinds(size):
    """HRNet-W48's masked units at input `size`: (label, c_in, c_out, kernel, stride, input h, w, bias, relu, residual)."""
    h4, w4 = size[0] // 4, size[1] // 4
    return [
        ("branch 3x3 48->48 +BN+add+ReLU (1/4)", 48, 48, 3, 1, h4, w4, False, True, True),
        ("branch 3x3 192->192 +BN+add+ReLU (1/16)", 192, 192, 3, 1, h4 // 4, w4 // 4, False, True, True),
        ("fuse down 3x3 s2 48->96 +BN (1/4->1/8)", 48, 96, 3, 2, h4, w4, False, False, False),
        ("fuse up 1x1 96->48 +BN (1/8)", 96, 48, 1, 1, h4 // 2, w4 // 2, False, False, False),
        ("exit3 1x1 336->128 +bias+BN+ReLU (1/8)", 336, 128, 1, 1, h4 // 2, w4 // 2, True, True, False),
        ("last_layer 1x1 720->720 +bias+BN+ReLU (1/4)", 720, 720, 1, 1, h4, w4, True, True, False),
        ("classifier 1x1 128->19 +bias (1/4)", 128, 19, 1, 1, h4, w4, True, False, False),
    ]


def make_unit(c_in, c_out, k, s, bias, relu, dtype, with_bn=True):
    seq = conv_bn(MaskedConv2d, c_in, c_out, k, s, 0.1, relu=relu)
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        conv, bn = seq[0], seq[1]
        conv.weight.copy_(torch.randn(conv.weight.shape, generator=gen) / (c_in * k * k) ** 0.5)
        if bias:
            conv.bias = torch.nn.Parameter(torch.randn(c_out, generator=gen) * 0.1)
        bn.weight.uniform_(0.5, 1.5, generator=gen)
        bn.bias.normal_(0, 0.1, generator=gen)
        bn.running_mean.normal_(0, 0.1, generator=gen)
        bn.running_var.uniform_(0.5, 1.5, generator=gen)
    if not with_bn:
        seq = torch.nn.Sequential(seq[0])
    return seq.eval().to(dtype=dtype, memory_format=torch.channels_last)


def kind_masks(h, w, shares):
    difficulty = synthetic_difficulty(h, w, seed=3)
    flat = difficulty.flatten()
    return {p: (difficulty >= torch.quantile(flat, 1 - p)).float()[:, None] for p in shares}


def time_interleaved(fns: dict, repeats: int, progress: Progress | None = None) -> dict:
    for f in fns.values():
        f()
    samples = {k: [] for k in fns}
    keys = list(fns)
    for r in range(repeats):
        for k in keys[r % len(keys):] + keys[:r % len(keys)]:
            t = time.perf_counter()
            fns[k]()
            samples[k].append((time.perf_counter() - t) * 1e3)
        if progress:
            progress.step()
    return {k: min(v) for k, v in samples.items()}  # min: robust to other processes on a shared machine


def run_kinds(size, dtype_name: str, repeats: int, progress: Progress) -> list[list]:
    dtype = DTYPES[dtype_name]
    rows = []
    for label, c_in, c_out, k, s, h, w, bias, relu, residual in conv_kinds(size):
        has_bn = not label.startswith("classifier")
        seq = make_unit(c_in, c_out, k, s, bias, relu, dtype, with_bn=has_bn)
        conv = seq[0]
        bn = seq[1] if has_bn else None
        ho, wo = conv.output_size(h, w)
        x = torch.randn(1, c_in, h, w).to(dtype).contiguous(memory_format=torch.channels_last)
        res = torch.randn(1, c_out, ho, wo).to(dtype).contiguous(memory_format=torch.channels_last) if residual else None
        folded = copy.deepcopy(seq)
        if has_bn:
            fold_batchnorm(folded, include_masked=True)
        dconv = folded[0]
        emulate, sparse = EmulatedExecution(), SparseExecution(dense_above=1.01)
        masks = kind_masks(ho, wo, PAPER_SHARES)
        for p, base in masks.items():
            base = base.to(dtype)
            # one mask per share, as in the model (one per exit): its index tables are built on the first call
            # (warm-up) and reused, as every conv after an exit reuses them; end-to-end timings include building them
            m_emulate, m_sparse = ComputeMask(base, emulate), ComputeMask(base, sparse)

            def dense():
                y = F.conv2d(x, dconv.weight, dconv.bias, conv.stride, conv.padding)
                y = y + res if res is not None else y
                return F.relu(y) if relu else y

            def emulated():
                y = conv(x, m_emulate)
                y = bn(y) if bn is not None else y
                y = y + res if res is not None else y
                return F.relu(y) if relu else y

            def sparse_unit():
                return sparse.unit(conv, bn, relu, x, m_sparse, res)

            with torch.inference_mode():
                med = time_interleaved({"dense": dense, "emulated": emulated, "sparse": sparse_unit}, repeats)
            dense_macs = conv.weight.numel() * ho * wo
            fr = dense_macs / masked_conv_macs(dense_macs, rbf_fill_units(c_out, ho, wo), p)
            mr = med["dense"] / med["sparse"]
            rows.append([label, dtype_name, p, med["dense"], med["emulated"], med["sparse"], fr, mr, mr / fr])
            progress.step(label)
    return rows


def run_calibration(size, dtype_name: str, repeats: int, progress: Progress) -> list[list]:
    """Per conv kind: the active share above which the dense fallback beats the sparse path."""
    dtype = DTYPES[dtype_name]
    rows = []
    shares = CALIBRATION_SHARES
    for label, c_in, c_out, k, s, h, w, bias, relu, residual in conv_kinds(size):
        seq = make_unit(c_in, c_out, k, s, bias, relu, dtype)
        conv, bn = seq[0], seq[1]
        ho, wo = conv.output_size(h, w)
        x = torch.randn(1, c_in, h, w).to(dtype).contiguous(memory_format=torch.channels_last)
        sparse, dense = SparseExecution(dense_above=1.01), SparseExecution(dense_above=0.0)
        masks = kind_masks(ho, wo, shares)
        cross = None
        line = [label, dtype_name]
        for p in shares:
            base = masks[p].to(dtype)
            ms, md = ComputeMask(base, sparse), ComputeMask(base, dense)
            with torch.inference_mode():
                med = time_interleaved({"s": lambda: sparse.unit(conv, bn, relu, x, ms),
                                        "d": lambda: dense.unit(conv, bn, relu, x, md)}, repeats)
            line.append(med["s"] / med["d"])
            if cross is None and med["s"] >= med["d"]:
                cross = p
            progress.step(label)
        rows.append(line + [cross if cross is not None else ">0.95"])
    return rows, shares


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="adpc_hrnet_w18s_seg,adpc_hrnet_w48_seg")
    parser.add_argument("--sizes", default="512x1024,1024x2048")
    parser.add_argument("--dtypes", default="fp32,bf16")
    parser.add_argument("--masks", default="synthetic,real")
    parser.add_argument("--tables", default="kinds,e2e,overhead")
    parser.add_argument("--repeats", type=int, default=3, help="timed forwards per mode (fastest counts)")
    parser.add_argument("--kind-repeats", type=int, default=7)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--quick", action="store_true", help="W18s at 256x512, fp32 and bf16, 2 repeats")
    parser.add_argument("--calibrate", action="store_true", help="only the dense-fallback calibration")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    if args.quick:
        args.models, args.sizes, args.repeats, args.kind_repeats = "adpc_hrnet_w18s_seg", "256x512", 2, 3
    if args.threads:
        torch.set_num_threads(args.threads)
    allocator = tune_allocator()
    models = [m for m in args.models.split(",") if m]
    sizes = [tuple(int(v) for v in s.split("x")) for s in args.sizes.split(",") if s]
    dtypes = [d for d in args.dtypes.split(",") if d]
    sources = [s for s in args.masks.split(",") if s]
    wanted = set(args.tables.split(","))
    if args.calibrate:
        wanted = {"calibrate"}
    print(f"# sparse execution benchmark: torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"{os.cpu_count()} CPUs, C++ extension {'loaded' if extension() is not None else 'NOT built'}, "
          f"heap-only allocator {'on' if allocator else 'off'}; load average at start {load_average()}\n")

    total = 0
    if "kinds" in wanted:
        total += len(sizes) * len(dtypes) * len(conv_kinds((512, 1024))) * len(PAPER_SHARES)
    if "e2e" in wanted:
        total += len(models) * len(sizes) * len(dtypes) * len(sources) * (3 + 3 * args.repeats)
    if "overhead" in wanted:
        total += len(models) * len(sizes) * len(dtypes) * (2 + 2 * args.repeats)
    if "calibrate" in wanted:
        total += len(sizes) * len(dtypes) * len(conv_kinds((512, 1024))) * len(CALIBRATION_SHARES)
    progress = Progress(total, enabled=not args.no_progress)
    out = []
    if "calibrate" in wanted:
        for size in sizes:
            for dt in dtypes:
                rows, shares = run_calibration(size, dt, args.kind_repeats, progress)
                out.append(f"## Dense fallback calibration at {size[0]}x{size[1]} input, {dt}: sparse ms / dense-path "
                           f"ms per active share\n\n" + table(["unit", "dtype"] + [str(p) for p in shares]
                                                              + ["crossover"], rows))
    if "kinds" in wanted:
        for size in sizes:
            rows = []
            for dt in dtypes:
                rows += run_kinds(size, dt, args.kind_repeats, progress)
            out.append(f"## Per conv kind (HRNet-W48 units at {size[0]}x{size[1]} input), synthetic masks\n\n" + table(
                ["unit", "dtype", "computed", "dense ms", "emulated ms", "sparse ms", "FLOPs ratio", "measured ratio",
                 "efficiency"], rows))
    if "e2e" in wanted:
        rows = []
        cache: dict = {}
        for name in models:
            for size in sizes:
                for dt in dtypes:
                    for src in sources:
                        rows += run_e2e(name, size, dt, src, args.repeats, progress, cache)
        out.append("## End to end, cumulative to each exit\n\n" + table(
            ["model", "size", "dtype", "masks", "exit", "dense ms", "emulated ms", "sparse ms", "FLOPs ratio",
             "measured ratio", "efficiency"], rows))
    if "overhead" in wanted:
        rows = []
        for name in models:
            for size in sizes:
                for dt in dtypes:
                    rows.append(run_overhead(name, size, dt, args.repeats, progress))
        out.append("## Nothing masked (threshold 1.0): sparse mode against dense, to the last exit\n\n" + table(
            ["model", "size", "dtype", "dense ms", "sparse ms", "overhead %"], rows))
    progress.close()
    print("\n\n".join(out))
    print(f"\nload average at end {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
