"""GPU latency of the anytime HRNet: dense vs emulated vs sparse (Triton tiles) per exit, fp16 or bf16, CUDA events.

    python benchmarks/gpu.py                       # W48 and W18s at 512x1024 and 1024x2048 (the README table)
    python benchmarks/gpu.py --quick               # W18s at 512x1024, 3 repeats: a smoke run of a few minutes
    python benchmarks/gpu.py --models adpc_hrnet_w48_seg --sizes 1024x2048 --repeats 20
    python benchmarks/gpu.py --tiles               # no GPU needed: how much of each map the active tiles cover

Modes (same weights, channels_last, fp16, `torch.inference_mode`):
- dense: `adaptive=False`, BN folded into every conv (the fair dense baseline, as in `sparse_speedup.py`);
- emulated: `execution="emulate"`, the authors' dense conv + mask + RBF fill;
- sparse: `execution="sparse"`, which on CUDA with Triton is the tile backend (`models/gpu/`), once per tile edge
  (`--tile-edges 4 8`: 4x4 is the default, four to a conv program; see `--tiles` for what each edge covers).
Masks are the synthetic ones of `sparse_speedup.py` (calibrated to Table 1's ADP-C GFLOPs per exit), scripted so
every mode computes the same pixels. Per exit: cumulative ms from the input to that exit (CUDA events recorded on
the stream at each exit, one synchronisation per forward; the fastest of the repeats), FLOPs ratio = dense GFLOPs /
adaptive GFLOPs (as the model reports them), measured ratio = dense ms / sparse ms, efficiency = measured / FLOPs
ratio. Also: exit-1 latency as a share of the dense forward, and the largest relative difference between sparse and
emulated logits per exit (the backend's correctness on this GPU). Without a CUDA device (or Triton) it says so and
exits with status 0.

Per model and size, after the table (that a forward makes no host synchronisation is `tools/gpu_checks.py`'s):
- synced per step: the whole adaptive forward with the host waiting for the GPU after every step, as the runtime's
  scheduler does (it measures step times and preempts between steps), against the forward queued without waits;
- exit download: one exit's outputs as the node takes them (class ids, confidence, computed mask, computed fraction
  and GFLOPs of image 0), ms for one packed copy into pinned memory (`data/transfer.to_host`, what the node does)
  vs one blocking copy per tensor, from a synchronised stream, the fastest of the repeats. That copy is what the
  node's per-exit overhead adds on a GPU; the rest (messages, encoding, publishing) is host work the same as on the
  CPU, see `benchmarks/node_latency.py`.

`--tiles` (CPU): for the same masks, the share of pixels computed at each conv resolution and the share the active
4x4, 8x8 and 16x16 tiles cover (what the tile backend computes): their ratio bounds the efficiency tiles can reach.
`--tiles --masks person`: the same for the shipped person model's own masks on four frames of the shipped clip.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anytime_perception import create_model  # noqa: E402
from anytime_perception.data.preprocess import clip_batch  # noqa: E402
from anytime_perception.data.transfer import segmentation_tensors, to_host  # noqa: E402
from anytime_perception.models.gpu import TritonExecution, kernels_run_on, tiles, triton_error  # noqa: E402
from anytime_perception.models.masks import ComputeMask, mask_from_bool  # noqa: E402
from anytime_perception.models.sparse.benchmark_masks import (ScriptedCriterion, calibrate_to_gflops,  # noqa: E402
                                                              paper_targets, synthetic_difficulty)
from anytime_perception.models.sparse.fold import fold_batchnorm  # noqa: E402
from anytime_perception.models.untrained import randomise_weights  # noqa: E402

MODELS = ("adpc_hrnet_w48_seg", "adpc_hrnet_w18s_seg")
SIZES = ((512, 1024), (1024, 2048))
TILE_EDGES = (4, 8, 16)
HEADERS = ["model", "size", "tile", "exit", "dense ms", "emulated ms", "sparse ms", "FLOPs ratio", "measured ratio",
           "efficiency", "sparse vs emulated"]


DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


CHECK_HEADERS = ["model", "size", "mode", "forward ms", "forward ms, synced per step", "exit download packed ms",
                 "exit download per tensor ms"]


def prepare(name: str, masks: list[torch.Tensor], device: torch.device, edges: list[int], dtype: torch.dtype) -> dict:
    """Models with the same (random) weights, in `dtype`, channels_last, on `device`: "dense", "emulated" and one
    sparse model per tile edge ("sparse 8" ...)."""
    base = create_model(name)
    randomise_weights(base, 0)
    models = {}
    for mode in ["dense", "emulated", *(f"sparse {e}" for e in edges)]:
        m = create_model(name, execution="emulate")
        m.load_state_dict(base.state_dict())
        m.eval()
        fold_batchnorm(m, include_masked=mode == "dense")
        if mode.startswith("sparse"):
            m.set_execution("sparse", device)  # the execution table's choice on CUDA: the Triton backend
            if not isinstance(m.execution, TritonExecution):
                raise RuntimeError(f"execution 'sparse' on {device} runs {m.execution_reason}, not the Triton backend")
            m.execution = TritonExecution(tile=int(mode.split()[1]))
        m.criterion = ScriptedCriterion([mask.to(device) for mask in masks])
        models[mode] = m.to(device=device, dtype=dtype, memory_format=torch.channels_last)
    return models


def exit_download_ms(result, repeats: int) -> tuple[float, float]:
    """(packed, one copy per tensor) ms to bring one exit's outputs of image 0 to the host, fastest of `repeats`."""
    outputs = segmentation_tensors(result, 0)

    def separate():
        arrays = [t.cpu().numpy() for name, t in outputs.items() if name != "cost"]
        return arrays, float(result.computed_fraction[0]), float(result.gflops[0])

    times = {"packed": [], "separate": []}
    for _ in range(repeats + 1):  # the first of each warms the pinned-memory cache
        for kind, download in (("packed", lambda: to_host(outputs)), ("separate", separate)):
            torch.cuda.synchronize()
            began = time.perf_counter()
            download()
            times[kind].append((time.perf_counter() - began) * 1000.0)
    return min(times["packed"][1:]), min(times["separate"][1:])


def timed_forward(model, images: torch.Tensor, adaptive: bool, sync_steps: bool = False
                  ) -> tuple[list[float], list[float], list, list]:
    """(ms from the input to each exit, cumulative GFLOPs per exit, logits per exit, exit results) of one forward;
    `sync_steps`: wait for the GPU after every step, as the runtime's scheduler does."""
    start = torch.cuda.Event(enable_timing=True)
    marks, gflops, logits, results = [], [], [], []
    with torch.inference_mode():
        start.record()
        state = model.begin(images, adaptive)
        while not state.finished:
            result = model.advance(state)
            if sync_steps:
                torch.cuda.synchronize()
            if result is not None:
                mark = torch.cuda.Event(enable_timing=True)
                mark.record()
                marks.append(mark)
                gflops.append(result.gflops)
                logits.append(result.logits)
                results.append(result)
        torch.cuda.synchronize()
    return [start.elapsed_time(m) for m in marks], [float(g.mean()) for g in gflops], logits, results


def run(name: str, size: tuple[int, int], repeats: int, device: torch.device, edges: list[int],
        dtype: torch.dtype, checks: list[list]) -> list[list]:
    """The table's rows for one model and size; appends its host-sync and download rows to `checks`."""
    models = prepare(name, synthetic_masks(size), device, edges, dtype)
    modes = list(models)
    images = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(0))
    images = images.to(device=device, dtype=dtype).contiguous(memory_format=torch.channels_last)
    outputs = {}
    for mode, model in models.items():  # warm-up: Triton compiles its kernels, cuDNN picks algorithms
        outputs[mode] = timed_forward(model, images, adaptive=mode != "dense")
    samples = {mode: [] for mode in modes}
    flops = {mode: outputs[mode][1] for mode in modes}
    for r in range(repeats):
        for mode in modes[r % len(modes):] + modes[:r % len(modes)]:  # rotating: no mode always follows another
            samples[mode].append(timed_forward(models[mode], images, adaptive=mode != "dense")[0])
    best = {mode: [min(s[k] for s in samples[mode]) for k in range(len(flops[mode]))] for mode in modes}
    rows = []
    for mode in modes[2:]:
        for k in range(len(flops["dense"])):
            emulated, sparse = outputs["emulated"][2][k].float(), outputs[mode][2][k].float()
            error = float((sparse - emulated).abs().max() / emulated.abs().max().clamp(min=1e-12))
            flops_ratio = flops["dense"][k] / flops[mode][k]
            measured = best["dense"][k] / best[mode][k]
            rows.append([name.replace("adpc_hrnet_", ""), f"{size[0]}x{size[1]}", mode.split()[1], k + 1,
                         best["dense"][k], best["emulated"][k], best[mode][k], flops_ratio, measured,
                         measured / flops_ratio, error])
    dense_total = best["dense"][-1]
    exit1 = min(best[mode][0] for mode in modes[2:])
    print(f"{name} {size[0]}x{size[1]}: exit 1 after {exit1:.2f} ms (sparse) = {100 * exit1 / dense_total:.1f}% "
          f"of the dense forward ({dense_total:.2f} ms)", flush=True)
    print(table(HEADERS, rows), flush=True)
    packed, separate = exit_download_ms(outputs["emulated"][3][-1], repeats)
    for mode in modes[1:]:
        synced = min(timed_forward(models[mode], images, True, sync_steps=True)[0][-1] for _ in range(repeats))
        checks.append([name.replace("adpc_hrnet_", ""), f"{size[0]}x{size[1]}", mode, best[mode][-1], synced, packed,
                       separate])
    return rows


def synthetic_masks(size: tuple[int, int]) -> list[torch.Tensor]:
    """Compute masks after exits 1..3 (B=1, 1/4 resolution, bool) calibrated to Table 1's ADP-C GFLOPs."""
    cfg = create_model("adpc_hrnet_w48_seg").config
    difficulty = synthetic_difficulty(size[0] // 4, size[1] // 4)
    return calibrate_to_gflops(cfg, size, difficulty, paper_targets(cfg, size))[0]


def person_masks(size: tuple[int, int], frames: int = 4) -> list[torch.Tensor]:
    """Compute masks after exits 1..3 (B=`frames`, 1/4 resolution, bool) of the shipped person model on frames of
    the shipped clip (held out from its training): real confidence masks, where the synthetic ones are calibrated."""
    model = create_model("adpc_hrnet_w18s_person_seg", pretrained=True, execution="emulate").eval()
    with torch.inference_mode():
        results = list(model.anytime(clip_batch(size, frames, model)))
    return [r.compute_mask > 0.5 for r in results[1:]]


def tile_coverage(size: tuple[int, int], masks: str) -> list[list]:
    """Per masked exit and conv resolution (1/4 .. 1/32): computed share, shares covered by active tiles (means
    over the images). `masks`: "synthetic" (calibrated to Table 1) or "person" (the shipped model's own)."""
    rows = []
    computes = [m[:1] for m in synthetic_masks(size)] if masks == "synthetic" else person_masks(size)
    for k, compute in enumerate(computes):
        base = mask_from_bool(compute, (-(-size[0] // 32) * 8, -(-size[1] // 32) * 8), torch.float32)
        mask = ComputeMask(base, TritonExecution())
        for factor in (4, 8, 16, 32):
            h, w = -(-size[0] // factor), -(-size[1] // factor)
            shares = []
            for edge in TILE_EDGES:
                table = tiles.tile_table(mask, h, w, edge)
                covered = table.active.reshape(-1, table.tiles_y, table.tiles_x).repeat_interleave(edge, 1) \
                    .repeat_interleave(edge, 2)[:, :h, :w]
                shares.append(float(covered.float().mean()))
            rows.append([f"{size[0]}x{size[1]}", masks, k + 2, f"1/{factor}", float(mask.fraction(h, w).mean()),
                         *shares])
    return rows


def table(headers: list[str], rows: list[list]) -> str:
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) and abs(v) < 1e-2 else f"{v:.2f}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + "---|" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--sizes", nargs="+", default=[f"{h}x{w}" for h, w in SIZES])
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--tile-edges", nargs="+", type=int, default=[4], help="one sparse run per tile edge")
    parser.add_argument("--dtype", choices=list(DTYPES), default="fp16")
    parser.add_argument("--quick", action="store_true", help="W18s at 512x1024, 3 repeats")
    parser.add_argument("--tiles", action="store_true", help="tile coverage of the masks (CPU, no timing)")
    parser.add_argument("--masks", choices=["synthetic", "person"], default="synthetic",
                        help="--tiles of the synthetic masks or of the shipped person model's on its clip")
    args = parser.parse_args(argv)
    if args.tiles:
        sizes = [tuple(int(v) for v in size.split("x")) for size in args.sizes]
        rows = [row for size in sizes for row in tile_coverage(size, args.masks)]
        coverage = [f"{e}x{e} tiles" for e in TILE_EDGES]
        print(table(["size", "masks", "exit", "resolution", "computed", *coverage], rows))
        return 0
    if not torch.cuda.is_available():
        print("benchmarks/gpu.py: no CUDA device (torch.cuda.is_available() is False); nothing measured")
        return 0
    device = torch.device("cuda")
    if not kernels_run_on(device):
        print(f"benchmarks/gpu.py: the Triton backend cannot run: {triton_error()}; nothing measured")
        return 0
    if args.quick:
        args.models, args.sizes, args.repeats = ["adpc_hrnet_w18s_seg"], ["512x1024"], 3
    print(f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}, {args.dtype}, batch 1, "
          f"fastest of {args.repeats}", flush=True)
    rows, checks = [], []
    for name in args.models:
        for size in args.sizes:
            h, w = (int(v) for v in size.split("x"))
            done = len(checks)
            rows += run(name, (h, w), args.repeats, device, args.tile_edges, DTYPES[args.dtype], checks)
            print(table(CHECK_HEADERS, checks[done:]), flush=True)  # so far, in case a later size runs out of time
    print(table(HEADERS, rows))
    print()
    print(table(CHECK_HEADERS, checks))
    return 0


if __name__ == "__main__":
    sys.exit(main())
