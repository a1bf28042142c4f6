"""The train command: config resolution, losses, overfitting tiny real-layout datasets, exact resume, torchrun."""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

try:
    import cv2
    import yaml  # noqa: F401
except ImportError as exc:  # pragma: no cover
    from conftest import dependency_missing

    dependency_missing(exc, "the train extra (OpenCV, PyYAML)")

from anytime_perception.models import create_model, list_models
from anytime_perception.tasks.losses import JointsMSELoss, PoseExitLoss, SegmentationExitLoss
from anytime_perception.training.config import add_config_arguments, resolve_config

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")

REPO = Path(__file__).resolve().parents[1]
CONFIGS = sorted((REPO / "config" / "train").glob("*.yaml"))
COLORS = np.array([[30, 30, 30], [220, 20, 60], [20, 160, 60]], np.uint8)


def parse(*argv: str):
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    return resolve_config(parser.parse_args(list(argv)))


def write_block_dataset(root: Path, count: int = 4, size: tuple[int, int] = (64, 64)) -> Path:
    """A folder dataset of coloured blocks: class 0 background, 1 and 2 rectangles (a little noise, so the model must
    learn colour, not exact pixels). Block edges lie on the 4-pixel grid of the exits' 1/4-resolution logits, so a
    perfect model can reach IoU 1 after upsampling."""
    rng = np.random.default_rng(0)
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    h, w = size
    for i in range(count):
        label = np.zeros(size, np.uint8)
        for cls in (1, 2):
            y, x = 4 * rng.integers(0, h // 8), 4 * rng.integers(0, w // 8)
            label[y:y + 4 * rng.integers(h // 16, h // 8), x:x + 4 * rng.integers(w // 16, w // 8)] = cls
        image = COLORS[label].astype(np.float32) + rng.normal(0, 8, size=(h, w, 3))
        cv2.imwrite(str(root / "images" / f"f{i}.png"), np.clip(image, 0, 255).astype(np.uint8)[..., ::-1])
        cv2.imwrite(str(root / "labels" / f"f{i}.png"), label)
    (root / "classes.yaml").write_text("names: [background, red, green]\n"
                                       "colors: [[30, 30, 30], [220, 20, 60], [20, 160, 60]]\nignore_index: 255\n")
    return root


def train_args(data: Path, output: Path, *extra: str) -> list[str]:
    return ["--model", "adpc_hrnet_w18s_seg", "--dataset", "folder", "--data-root", str(data), "--crop", "64x64",
            "--base-size", "64", "--scale-range", "1.0,1.0", "--batch-size", "2", "--workers", "0", "--amp", "none",
            "--output", str(output), "--log-every", "1", "--precise-bn-batches", "2", *extra]


def read_log(output: Path) -> list[dict]:
    return [json.loads(line) for line in (output / "log.jsonl").read_text().splitlines()]


# ----- configuration ------------------------------------------------------------------------------------------------
def test_every_shipped_config_resolves_to_a_registered_model():
    assert len(CONFIGS) == 9
    for path in CONFIGS:
        config = parse("--config", str(path), "--data-root", "/data")
        assert config.model in list_models(), path
        assert config.model == path.stem
        assert (config.optimizer, config.lr) == (("adam", 1e-3) if config.dataset == "mpii" else ("sgd", 0.01))


def test_flags_override_the_yaml_and_a_length_flag_replaces_the_files_length():
    config = parse("--config", str(REPO / "config/train/adpc_hrnet_w48_seg.yaml"), "--data-root", "/d",
                   "--lr", "0.5", "--crop", "64x128", "--iters", "7", "--exit-weights", "1,0.5,0.5,2")
    assert config.lr == 0.5 and config.crop == (64, 128) and config.iters == 7 and config.epochs is None
    assert config.exit_weights == (1.0, 0.5, 0.5, 2.0)
    assert config.momentum == 0.9  # from the file


def test_bad_settings_are_refused_with_the_reason(tmp_path):
    with pytest.raises(ValueError, match="--data-root"):
        parse("--iters", "3")
    with pytest.raises(ValueError, match="exactly one of --iters and --epochs"):
        parse("--data-root", "/d")
    bad = tmp_path / "bad.yaml"
    bad.write_text("learning_rate: 0.1\n")
    with pytest.raises(ValueError, match="unknown setting.*learning_rate"):
        parse("--config", str(bad), "--data-root", "/d", "--iters", "1")


# ----- losses -------------------------------------------------------------------------------------------------------
def test_segmentation_loss_is_the_weighted_sum_of_per_exit_ce_on_upsampled_logits():
    torch.manual_seed(0)
    logits = [torch.randn(2, 3, 4, 5, requires_grad=True) for _ in range(4)]
    labels = torch.randint(0, 3, (2, 16, 20))
    labels[0, :3] = 255
    class_weights = torch.tensor([0.5, 1.0, 2.0])
    total, per_exit = SegmentationExitLoss((1, 2, 0, 1), class_weights)(logits, {"label": labels})
    expected = [F.cross_entropy(F.interpolate(x, size=(16, 20), mode="bilinear", align_corners=False), labels,
                                weight=class_weights, ignore_index=255) for x in logits]
    torch.testing.assert_close(torch.stack(per_exit), torch.stack(expected))
    torch.testing.assert_close(total, expected[0] + 2 * expected[1] + expected[3])
    total.backward()
    assert logits[2].grad is None or logits[2].grad.abs().sum() == 0  # weight 0: no gradient from exit 3


def test_joints_mse_is_half_the_visibility_weighted_mse_averaged_over_joints():
    torch.manual_seed(0)
    pred, target = torch.rand(2, 16, 8, 8), torch.rand(2, 16, 8, 8)
    weight = (torch.rand(2, 16, 1) > 0.3).float()
    per_joint = [0.5 * ((pred[:, j] * weight[:, j, :, None]) - (target[:, j] * weight[:, j, :, None])).pow(2).mean()
                 for j in range(16)]
    torch.testing.assert_close(JointsMSELoss()(pred, target, weight), torch.stack(per_joint).mean())
    total, per_exit = PoseExitLoss((1, 1))([pred, pred * 0], {"target": target, "target_weight": weight})
    torch.testing.assert_close(total, per_exit[0] + per_exit[1])
    with pytest.raises(ValueError, match="2 exit"):
        PoseExitLoss((1, 1, 1))([pred, pred], {"target": target, "target_weight": weight})


# ----- training end to end -------------------------------------------------------------------------------------------
def test_prior_bias_starts_every_exit_at_the_label_frequencies(tmp_path):
    from anytime_perception.data.datasets import build_dataset
    from anytime_perception.training.train import build_model

    data = write_block_dataset(tmp_path / "blocks")
    labels = np.stack([cv2.imread(str(p), cv2.IMREAD_GRAYSCALE) for p in sorted((data / "labels").glob("*.png"))])
    expected = np.bincount(labels.ravel(), minlength=3) / labels.size
    dataset = build_dataset("folder", data, "train", train=True, crop_size=(64, 64))
    model = build_model(parse(*train_args(data, tmp_path / "out", "--iters", "1", "--prior-bias")), dataset)
    for index in range(1, model.num_exits + 1):
        bias = model.exit_classifier(index).bias.detach().double()
        torch.testing.assert_close(bias.exp(), torch.from_numpy(expected), rtol=1e-5, atol=1e-6)
    plain = build_model(parse(*train_args(data, tmp_path / "out", "--iters", "1")), dataset)
    assert not torch.allclose(plain.exit_classifier(1).bias.double().exp(), torch.from_numpy(expected), atol=1e-3)


def final_exit_iou(checkpoint: Path, data: Path) -> list[float]:
    from anytime_perception.data.datasets import build_dataset
    from anytime_perception.tasks.metrics import ConfusionMatrix

    model = create_model("adpc_hrnet_w18s_seg", num_classes=3, checkpoint=checkpoint)
    dataset = build_dataset("folder", data, "val", train=False)
    matrix = ConfusionMatrix(3)
    with torch.no_grad():
        for i in range(len(dataset)):
            sample = dataset[i]
            logits = model(sample["image"][None])[-1]
            matrix.update_from_logits(logits, sample["label"][None])
    return matrix.iou().tolist()


def test_adpc_w18s_overfits_a_tiny_segmentation_set_and_loads_as_a_model(tmp_path):
    data = write_block_dataset(tmp_path / "data")
    output = tmp_path / "run"
    from anytime_perception.training import train

    # measured: loss 4.40 (iteration 1), 1.55 (10) -> 0.52-0.56 (150), final-exit IoU 0.98 / 0.94 / 0.92 (constant lr 0.03, no weight decay, full batch)
    argv = train_args(data, output, "--iters", "150", "--batch-size", "4", "--lr", "0.03", "--weight-decay", "0",
                      "--lr-schedule", "step", "--lr-steps", "1.0", "--log-every", "10")
    assert train.run(parse_namespace(argv)) == 0
    log = read_log(output)
    assert [r["iter"] for r in log] == list(range(10, 151, 10))
    assert {f"loss_exit{k}" for k in range(1, 5)} <= set(log[0])
    assert log[-1]["loss"] < 0.5 * log[0]["loss"], (log[0]["loss"], log[-1]["loss"])  # from iteration 10 on
    iou = final_exit_iou(output / "model_final.pth", data)
    assert min(iou) > 0.85, iou
    saved = torch.load(output / "model_final.pth", weights_only=False)
    assert saved["labels"]["class_names"] == ["background", "red", "green"]


def parse_namespace(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser()
    add_config_arguments(parser)
    return parser.parse_args(argv)


def test_resume_continues_exactly_where_an_interrupted_run_stopped(tmp_path):
    from anytime_perception.training import train

    data = write_block_dataset(tmp_path / "data", count=5)
    straight, split = tmp_path / "straight", tmp_path / "split"
    common = ("--iters", "6", "--precise-bn-batches", "0", "--workers", "2")
    assert train.run(parse_namespace(train_args(data, straight, *common))) == 0
    assert train.run(parse_namespace(train_args(data, split, *common, "--stop-at", "3"))) == 0
    assert not (split / "model_final.pth").exists()
    assert [r["iter"] for r in read_log(split)] == [1, 2, 3]
    assert train.run(parse_namespace(["--resume", "--output", str(split)])) == 0
    assert [r["loss"] for r in read_log(split)] == [r["loss"] for r in read_log(straight)]
    a = torch.load(straight / "model_final.pth", weights_only=False)["state_dict"]
    b = torch.load(split / "model_final.pth", weights_only=False)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_to_change_the_runs_settings(tmp_path):
    from anytime_perception.training import train

    data = write_block_dataset(tmp_path / "data")
    output = tmp_path / "run"
    assert train.run(parse_namespace(train_args(data, output, "--iters", "2", "--stop-at", "1",
                                                "--precise-bn-batches", "0"))) == 0
    with pytest.raises(ValueError, match="lr"):
        resolve_config(parse_namespace(["--resume", "--output", str(output), "--lr", "0.5"]))
    # a fresh run into a folder that holds one is refused too
    assert train.run(parse_namespace(train_args(data, output, "--iters", "2"))) == 1


def test_torchrun_two_cpu_processes_train_and_write_a_loadable_checkpoint(tmp_path):
    data = write_block_dataset(tmp_path / "data", count=4)
    output = tmp_path / "ddp"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
           "-m", "anytime_perception.cli", "train", *train_args(data, output, "--iters", "3", "--batch-size", "1")]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    log = read_log(output)
    assert [r["iter"] for r in log] == [1, 2, 3]
    assert log[-1]["img_per_s"] > 0
    model = create_model("adpc_hrnet_w18s_seg", num_classes=3, checkpoint=output / "model_final.pth")
    assert all(torch.isfinite(p).all() for p in model.state_dict().values() if p.is_floating_point())


JOINT_COLOURS = np.array([[(37 * j) % 256, (97 * j + 60) % 256, (151 * j + 120) % 256] for j in range(16)], np.uint8)


def write_dot_people(root: Path, count: int = 2, size: int = 64) -> Path:
    """A folder_pose dataset: one 'person' per image whose 16 joints are 3x3 dots, each joint its own colour, on a
    dark background; the person fills the frame (center = image centre, scale = size / 200)."""
    import json as jsonlib

    rng = np.random.default_rng(1)
    (root / "images").mkdir(parents=True)
    (root / "poses").mkdir()
    for i in range(count):
        image = np.full((size, size, 3), 20, np.uint8)
        joints = []
        for j in range(16):
            x, y = (int(v) for v in rng.integers(6, size - 6, size=2))
            image[y - 1:y + 2, x - 1:x + 2] = JOINT_COLOURS[j]
            joints.append([x, y, 1])
        cv2.imwrite(str(root / "images" / f"p{i}.png"), image[..., ::-1])
        person = {"joints": joints, "center": [size / 2, size / 2], "scale": size / 200,
                  "head_box": [0, 0, size / 2, size / 2]}
        (root / "poses" / f"p{i}.json").write_text(jsonlib.dumps({"people": [person]}))
    return root


def test_pose_model_learns_on_a_tiny_pose_set(tmp_path):
    from anytime_perception.data.datasets import build_dataset
    from anytime_perception.training import train
    from anytime_perception.training.evaluate import evaluate_model

    data = write_dot_people(tmp_path / "data")
    output = tmp_path / "pose"
    argv = ["--model", "adpc_hrnet_w32_pose", "--dataset", "folder_pose", "--data-root", str(data), "--crop", "64x64",
            "--batch-size", "2", "--workers", "0", "--amp", "none", "--optimizer", "adam", "--lr", "0.003",
            "--lr-schedule", "step", "--iters", "40", "--output", str(output), "--log-every", "1",
            "--precise-bn-batches", "1"]
    assert train.run(parse_namespace(argv)) == 0
    log = read_log(output)
    first, last = np.mean([r["loss"] for r in log[:3]]), np.mean([r["loss"] for r in log[-3:]])
    assert last < 0.5 * first, (first, last)
    model = create_model("adpc_hrnet_w32_pose", checkpoint=output / "model_final.pth")
    dataset = build_dataset("folder_pose", data, "val", train=False, input_size=(64, 64))
    metrics = evaluate_model(model, dataset, flip_test=False)
    # measured after 40 iterations: PCKh 0.36 / 0.54 / 0.43 / 0.36 per exit (chance, a joint anywhere in the
    # crop: ~0.15); the test budget allows learning to start, not to converge
    assert np.mean([e["pckh"] for e in metrics["exits"]]) > 0.3, metrics["exits"]
