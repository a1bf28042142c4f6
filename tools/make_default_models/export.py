"""Stage `export`: the trained weights into the package (fp16) and the shipped held-out frames into the tests.

Writes
- anytime_perception/assets/models/NAME.pth for each model of `models.pretrained.PRETRAINED`: the run's
  model_final.pth with its floating-point tensors in fp16 where they fit (half the size; the model computes in fp32
  after loading)
  and its metadata (labels, training settings) kept;
- test/data/person_held_out/: the ship stage's held-out frames as a `folder` dataset (images/, labels/,
  classes.yaml) and a `folder_pose` one (poses/ from the pose dataset), which the evaluate stage measures and the
  package's test checks against the card.
Everything measured after this stage is measured on exactly what ships.
"""
from __future__ import annotations

import json
import shutil
import sys

import torch

from common import DATASETS, REPO, SHIP, WORK

sys.path.insert(0, str(REPO))
from anytime_perception.models import model_config  # noqa: E402
from anytime_perception.models.pretrained import PRETRAINED  # noqa: E402

RUNS = {"adpc_hrnet_w18s_person_seg": "person_seg", "adpc_hrnet_w18s_person_pose": "person_pose"}
ASSETS = REPO / "anytime_perception" / "assets" / "models"
HELD_OUT = REPO / "test" / "data" / "person_held_out"
CHECKED_KEYS = ("backbone", "task", "exit_head", "confidence_adaptive", "num_classes")


def to_half(tensor: torch.Tensor) -> torch.Tensor:
    """fp16 where the values fit; fp32 where they do not (the RBF fill's squared pixel distances exceed 65504)."""
    if not tensor.is_floating_point():
        return tensor
    half = tensor.half()
    return half if bool(torch.isfinite(half).all()) else tensor


def export_weights(name: str, run: str) -> None:
    source = WORK / "runs" / run / "model_final.pth"
    if not source.is_file():
        raise SystemExit(f"{source} is missing: run the train stages first")
    payload = torch.load(source, map_location="cpu", weights_only=True)
    trained, wanted = payload.get("model_config", {}), model_config(name)
    for key in CHECKED_KEYS:
        expected = getattr(wanted, key) if key != "num_classes" else wanted.outputs
        got = trained.get(key) if key != "num_classes" else (trained.get(key) or expected)
        if got != expected:
            raise SystemExit(f"{source} was trained with {key}={got!r}, but {name} (models/pretrained.py) has "
                             f"{key}={expected!r}: train with the model the package registers")
    payload["state_dict"] = {k: to_half(v) for k, v in payload["state_dict"].items()}
    payload["model_config"] = {**trained, "num_classes": wanted.outputs}
    ASSETS.mkdir(parents=True, exist_ok=True)
    target = ASSETS / f"{name}.pth"
    torch.save(payload, target)
    print(f"export: {target} ({target.stat().st_size / 1e6:.1f} MB, from {source})")


def export_held_out_frames() -> None:
    frames = json.loads((SHIP / "frames.json").read_text())
    if HELD_OUT.exists():
        shutil.rmtree(HELD_OUT)
    for folder in ("images", "labels", "poses"):
        (HELD_OUT / folder).mkdir(parents=True)
    shutil.copyfile(DATASETS / "person_seg" / "classes.yaml", HELD_OUT / "classes.yaml")
    for stem in frames:
        shutil.copyfile(SHIP / f"{stem}.jpg", HELD_OUT / "images" / f"{stem}.jpg")
        shutil.copyfile(SHIP / f"{stem}.png", HELD_OUT / "labels" / f"{stem}.png")
        shutil.copyfile(DATASETS / "person_pose" / "poses" / f"{stem}.json", HELD_OUT / "poses" / f"{stem}.json")
    (HELD_OUT / "README.md").write_text(
        "# Held-out frames for the shipped person models' test\n\n"
        f"vtest.avi frames {', '.join(s.split('_')[1] for s in frames)} (never trained on: training used 0-599) with"
        " their teacher labels, written by `tools/make_default_models` (stages ship, export): a `folder` dataset"
        " (images/, labels/: 0 background, 1 person, 255 ignore) and a `folder_pose` one (poses/). Licence of the"
        " frames: as `anytime_perception/assets/vtest/README.md` (Apache-2.0 AND BSD-3-Clause).\n")
    print(f"export: {len(frames)} held-out frames with teacher labels in {HELD_OUT}")


def main() -> int:
    if set(RUNS) != set(PRETRAINED):
        raise SystemExit(f"export knows runs for {sorted(RUNS)}, the package registers {sorted(PRETRAINED)}")
    for name, run in RUNS.items():
        export_weights(name, run)
    export_held_out_frames()
    return 0


if __name__ == "__main__":
    sys.exit(main())
