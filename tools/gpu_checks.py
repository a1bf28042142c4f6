"""Correctness of everything that runs differently on a CUDA device, in one short run on a lent GPU.

CI has no GPU: there the Triton kernels run under Triton's interpreter on CPU tensors and the node's device paths
(upload, download, keypoint decoding) on CPU tensors. This script checks the same things where they really run:

    python tools/gpu_checks.py                     # cuda; one line per check, exit status 1 if any failed
    TRITON_INTERPRET=1 python tools/gpu_checks.py --device cpu --size 32x32   # the script itself, no GPU

1. compiled Triton kernels against the emulation: W18s seg, random weights, random per-image masks (the same for
   both), batch 2, an odd input size, every exit: fp32 within 1e-4 of the largest logit (the interpreter tests'
   tolerance); fp16 and bf16 no less accurate than the emulation run in the same dtype, both judged against the
   fp32 emulation (at most 2x its error plus 1e-3);
2. an adaptive forward of each execution makes no host synchronisation (CUDA's sync debug mode at "error");
3. `data/transfer.to_host` (one packed copy, pinned) equals a plain `.cpu()` of each tensor;
4. `data/preprocess.normalise_on_device` equals the CPU normalisation (within fp32 rounding);
5. `tasks/pose.decode_heatmaps` on the device equals it on the CPU;
6. `models/execution.time_executions` (what `execution: auto` measures at warm-up) times emulate and triton.
"""
from __future__ import annotations

import argparse
import sys
import traceback
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from anytime_perception import create_model  # noqa: E402
from anytime_perception.data.preprocess import normalise, normalise_on_device, normalizer  # noqa: E402
from anytime_perception.data.transfer import to_host  # noqa: E402
from anytime_perception.models.execution import time_executions  # noqa: E402
from anytime_perception.models.untrained import randomise_weights  # noqa: E402
from anytime_perception.tasks.pose import decode_heatmaps  # noqa: E402

NAME = "adpc_hrnet_w18s_seg"
HALF = {"fp16": torch.float16, "bf16": torch.bfloat16}


def relative(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.float() - want.float()).abs().max() / want.float().abs().max().clamp(min=1e-12))


def model_on(device, execution: str, dtype=torch.float32, **overrides):
    model = create_model(NAME, execution="emulate", **overrides).eval()
    randomise_weights(model, 0)
    model.set_execution(execution, device)
    return model.to(device=device, dtype=dtype)


def logits_per_exit(model, images) -> list[torch.Tensor]:
    with torch.inference_mode():
        return [r.logits.float() for r in model.anytime(images)]


def check_kernels(device, size) -> list[tuple[bool, str]]:
    images = torch.randn(2, 3, *size, generator=torch.Generator().manual_seed(0)).to(device)
    masks = dict(criterion="random", random_compute_prob=0.5)  # drawn from a seeded CPU generator: same for both
    reference = logits_per_exit(model_on(device, "emulate", **masks), images)
    lines = []
    tiles = logits_per_exit(model_on(device, "triton", **masks), images)
    errors = [relative(t, r) for t, r in zip(tiles, reference)]
    lines.append((max(errors) <= 1e-4, f"triton fp32 vs emulate fp32, per exit: {fmt(errors)} (<= 1e-4)"))
    for label, dtype in HALF.items():
        if device.type == "cpu" and dtype == torch.bfloat16:
            continue  # the interpreter multiplies bf16 as raw bit patterns (see test_gpu_backend.py)
        half_images = images.to(dtype)
        emulated = logits_per_exit(model_on(device, "emulate", dtype, **masks), half_images)
        tiled = logits_per_exit(model_on(device, "triton", dtype, **masks), half_images)
        e_err = [relative(e, r) for e, r in zip(emulated, reference)]
        t_err = [relative(t, r) for t, r in zip(tiled, reference)]
        ok = all(t <= 2 * e + 1e-3 for t, e in zip(t_err, e_err))
        lines.append((ok, f"{label} error vs fp32 emulate, per exit: triton {fmt(t_err)}, emulate {fmt(e_err)} "
                          "(triton <= 2 x emulate + 1e-3)"))
    return lines


def check_no_sync(device, size) -> list[tuple[bool, str]]:
    if device.type != "cuda":
        return [(True, "host syncs: skipped off CUDA (test_model_host_reads.py covers the CPU)")]
    images = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(1)).to(device)
    lines = []
    for execution in ("emulate", "triton"):
        model = model_on(device, execution, criterion="top_ratio", top_ratio=0.5)
        logits_per_exit(model, images)  # folds weights, compiles kernels
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            logits_per_exit(model, images)
            lines.append((True, f"host syncs in an adaptive forward ({execution}): none"))
        except RuntimeError as error:
            lines.append((False, f"host syncs in an adaptive forward ({execution}): {str(error).splitlines()[0]}"))
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return lines


def check_transfers(device) -> list[tuple[bool, str]]:
    gen = torch.Generator().manual_seed(2)
    tensors = {"labels": torch.randint(0, 19, (37, 53), generator=gen, dtype=torch.uint8),
               "confidence": torch.rand(37, 53, generator=gen), "cost": torch.tensor([0.25, 3.5], dtype=torch.float64)}
    host = to_host({k: v.to(device) for k, v in tensors.items()})
    ok_download = all(np.array_equal(host[k], v.numpy()) for k, v in tensors.items())
    rgb = torch.randint(0, 256, (45, 67, 3), generator=gen, dtype=torch.uint8).numpy()
    model = create_model(NAME)
    scale, offset = normalizer(model)
    on_device = normalise_on_device(rgb, torch.from_numpy(scale).view(3, 1, 1).to(device),
                                    torch.from_numpy(offset).view(3, 1, 1).to(device), device)
    upload_error = float((on_device.cpu() - torch.from_numpy(normalise(rgb, scale, offset))).abs().max())
    heatmaps = torch.rand(2, 16, 32, 24, generator=gen)
    coords, scores = decode_heatmaps(heatmaps, (128, 96))
    coords_d, scores_d = decode_heatmaps(heatmaps.to(device), (128, 96))
    ok_decode = torch.equal(coords, coords_d.cpu()) and torch.equal(scores, scores_d.cpu())
    return [(ok_download, "to_host (one packed copy) equals .cpu() of each tensor"),
            (upload_error <= 1e-5, f"normalise_on_device vs CPU normalise: max difference {upload_error:.2g} "
                                   "(<= 1e-5)"),
            (ok_decode, "decode_heatmaps on the device equals the CPU")]


def check_auto(device, size) -> list[tuple[bool, str]]:
    model = model_on(device, "emulate", criterion="top_ratio", top_ratio=0.5)
    images = torch.randn(1, 3, *size, generator=torch.Generator().manual_seed(3)).to(device)
    seconds = time_executions(model, images, ("emulate", "triton"), repeats=2)
    ok = set(seconds) == {"emulate", "triton"} and all(s > 0 for s in seconds.values())
    return [(ok, "time_executions: " + ", ".join(f"{k} {1000 * v:.2f} ms" for k, v in seconds.items()))]


def fmt(values: list[float]) -> str:
    return " / ".join(f"{v:.2g}" for v in values)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--size", default="72x100", help="input HxW of the model checks (odd on purpose)")
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("tools/gpu_checks.py: no CUDA device; nothing checked")
        return 0
    size = tuple(int(v) for v in args.size.split("x"))
    print(f"{torch.cuda.get_device_name(device) if device.type == 'cuda' else 'cpu'}, torch {torch.__version__}",
          flush=True)
    failed = 0
    checks = {"kernels": lambda: check_kernels(device, size), "no sync": lambda: check_no_sync(device, size),
              "transfers": lambda: check_transfers(device), "auto": lambda: check_auto(device, size)}
    for name, check in checks.items():
        try:
            lines = check()
        except Exception:  # noqa: BLE001 - a check that crashes is a failed check; the others still run
            lines = [(False, f"{name}: crashed\n{traceback.format_exc()}")]
        for ok, line in lines:
            failed += not ok
            print(f"{'PASS' if ok else 'FAIL'} {line}", flush=True)
    print(f"{failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
