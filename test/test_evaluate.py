"""`anytime-perception evaluate` end to end on tiny datasets in the real layouts: Cityscapes' mIoU against
cityscapesscripts' own evaluation of the saved predictions, per-image GFLOPs, MPII's PCKh with the flip test."""
import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import dependency_missing

try:
    import cv2
    import scipy.io
    from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as cs_eval
    from cityscapesscripts.helpers.labels import labels as cs_labels
    from matplotlib.figure import Figure
except ImportError as error:
    dependency_missing(error, "the 'train' extra (OpenCV, scipy, cityscapesscripts, matplotlib)")

from anytime_perception.cli import main
from anytime_perception.data.datasets import build_dataset
from anytime_perception.data.labels import MPII_FLIP_PAIRS
from anytime_perception.models import create_model
from anytime_perception.models.checkpoint import save_checkpoint
from anytime_perception.tasks.metrics import flip_back, pckh
from anytime_perception.training.evaluate import ExitOutput, evaluate_model
from anytime_perception.training.plots import accuracy_vs_gflops_figure, paper_points

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")

SEG_MODEL = "adpc_hrnet_w18s_seg"
# Untrained weights are confident nowhere at the paper's threshold; masking half the pixels after every exit makes
# the computed fractions and GFLOPs differ from the dense ones, which the cost test needs.
SEG_OVERRIDES = {"criterion": "top_ratio", "top_ratio": 0.5}
# (city, frame, height, width): two cities, images of two sizes (evaluated each at its own size)
CITY_IMAGES = (("aachen", 19, 32, 64), ("aachen", 20, 32, 64), ("bochum", 7, 64, 64))
EVAL_TRAIN_IDS = [lab for lab in cs_labels if 0 <= lab.trainId < 255]
IGNORED_LABEL_IDS = [lab.id for lab in cs_labels if lab.ignoreInEval and lab.id >= 0]


# ----- a tiny Cityscapes tree ---------------------------------------------------------------------------------------
def _label_ids(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """8x8 blocks of random label ids, with every evaluated class and some ignored ids present."""
    blocks = rng.choice([lab.id for lab in EVAL_TRAIN_IDS] + IGNORED_LABEL_IDS[:4], size=(h // 8, w // 8))
    flat = blocks.reshape(-1)
    flat[:len(EVAL_TRAIN_IDS)] = rng.permutation([lab.id for lab in EVAL_TRAIN_IDS])
    return np.kron(blocks, np.ones((8, 8), dtype=np.int64)).astype(np.uint8)


@pytest.fixture(scope="module")
def cityscapes_root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("cityscapes")
    rng = np.random.default_rng(0)
    for city, frame, h, w in CITY_IMAGES:
        stem = f"{city}_000000_{frame:06d}"
        for folder, suffix, array in (
                ("leftImg8bit", "_leftImg8bit.png", rng.integers(0, 256, size=(h, w, 3), dtype=np.uint8)),
                ("gtFine", "_gtFine_labelIds.png", _label_ids(rng, h, w))):
            path = root / folder / "val" / city / f"{stem}{suffix}"
            path.parent.mkdir(parents=True, exist_ok=True)
            assert cv2.imwrite(str(path), array)
    return root


@pytest.fixture(scope="module")
def seg_checkpoint(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("weights") / "w18s.pth"
    save_checkpoint(create_model(SEG_MODEL, **SEG_OVERRIDES), path)
    return path


@pytest.fixture(scope="module")
def seg_run(cityscapes_root, seg_checkpoint, tmp_path_factory):
    output = tmp_path_factory.mktemp("eval_seg")
    argv = ["evaluate", "--model", SEG_MODEL, "--checkpoint", str(seg_checkpoint), "--dataset", "cityscapes",
            "--data-root", str(cityscapes_root), "--split", "val", "--output", str(output), "--save-predictions",
            "--visualize", "1", "--workers", "0", "--device", "cpu"]
    for key, value in SEG_OVERRIDES.items():
        argv += ["--override", f"{key}={value}"]
    assert main(argv) == 0
    return output, json.loads((output / "metrics.json").read_text())


def official_pixel_evaluation(cityscapes_root: Path, predictions: Path) -> dict:
    """cityscapesscripts' evalPixelLevelSemanticLabeling on a results folder, called the way its main() does
    (its settings live in a module-level `args`; instance scores and the JSON export are switched off)."""
    args = cs_eval.args
    saved = dict(vars(args))
    try:
        args.groundTruthSearch = str(cityscapes_root / "gtFine" / "val" / "*" / "*_gtFine_labelIds.png")
        args.predictionPath, args.predictionWalk = str(predictions), None
        args.evalInstLevelScore, args.JSONOutput, args.quiet = False, False, True
        ground_truth = sorted(Path(cityscapes_root).glob("gtFine/val/*/*_gtFine_labelIds.png"))
        found = [cs_eval.getPrediction(args, str(gt)) for gt in ground_truth]
        return cs_eval.evaluateImgLists(found, [str(gt) for gt in ground_truth], args)
    finally:
        vars(args).clear()
        vars(args).update(saved)


def test_miou_equals_cityscapesscripts_on_the_saved_predictions(seg_run, cityscapes_root):
    output, metrics = seg_run
    assert metrics["images"] == len(CITY_IMAGES) and metrics["metric"] == "miou"
    assert [e["exit"] for e in metrics["exits"]] == [1, 2, 3, 4]
    for e in metrics["exits"]:
        folder = output / "predictions" / f"exit{e['exit']}"
        files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*.png"))
        assert files == [f"{c}/{c}_000000_{f:06d}.png" for c, f, _, _ in CITY_IMAGES]
        official = official_pixel_evaluation(cityscapes_root, folder)
        ours = dict(zip(metrics["class_names"], e["iou"]))
        for lab in EVAL_TRAIN_IDS:
            assert ours[lab.name] == pytest.approx(official["classScores"][lab.name], abs=1e-6), lab.name
        assert e["miou"] == pytest.approx(official["averageScoreClasses"], abs=1e-6)
    # the check compares something: untrained exits predict several classes, not all right, not all wrong
    assert 0.0 < metrics["exits"][0]["miou"] < 1.0
    saved = cv2.imread(str(output / "predictions" / "exit4" / "bochum" / "bochum_000000_000007.png"),
                       cv2.IMREAD_UNCHANGED)
    assert saved.shape == (64, 64) and set(np.unique(saved)) <= {lab.id for lab in EVAL_TRAIN_IDS}


def test_gflops_and_fractions_are_means_of_per_image_measurements(seg_run, cityscapes_root, seg_checkpoint):
    _, metrics = seg_run
    model = create_model(SEG_MODEL, checkpoint=seg_checkpoint, **SEG_OVERRIDES)
    dataset = build_dataset("cityscapes", cityscapes_root, "val", train=False)
    gflops, fractions = np.zeros((len(dataset), 4)), np.zeros((len(dataset), 4))
    with torch.inference_mode():
        for i in range(len(dataset)):
            for r in model.anytime(dataset[i]["image"][None]):
                gflops[i, r.index - 1], fractions[i, r.index - 1] = float(r.gflops[0]), float(r.computed_fraction[0])
    assert gflops[0, 3] < gflops[2, 3]  # the taller image costs more: a mean over images, not one image's cost
    for e in metrics["exits"]:
        assert e["gflops"] == pytest.approx(gflops[:, e["exit"] - 1].mean(), rel=1e-9)
        assert e["computed_fraction"] == pytest.approx(fractions[:, e["exit"] - 1].mean(), rel=1e-9)
    assert metrics["exits"][0]["computed_fraction"] == 1.0
    assert all(0.4 < e["computed_fraction"] < 0.6 for e in metrics["exits"][1:])  # top_ratio 0.5


def test_reports_table_csv_and_figures(seg_run):
    output, metrics = seg_run
    with open(output / "metrics.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [int(r["exit"]) for r in rows] == [1, 2, 3, 4]
    assert float(rows[2]["miou"]) == pytest.approx(metrics["exits"][2]["miou"])
    assert float(rows[1]["iou_car"]) == pytest.approx(metrics["exits"][1]["iou"][13])
    assert float(rows[3]["gflops"]) == pytest.approx(metrics["exits"][3]["gflops"])
    assert metrics["mean_over_exits"]["miou"] == pytest.approx(np.mean([e["miou"] for e in metrics["exits"]]))
    for png in ("accuracy_vs_gflops.png", "visualize/aachen_aachen_000000_000019.png"):
        assert (output / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", png
    assert len(list((output / "visualize").iterdir())) == 1  # --visualize 1


def test_printed_table(cityscapes_root, seg_checkpoint, tmp_path, capsys):
    argv = ["evaluate", "--model", SEG_MODEL, "--checkpoint", str(seg_checkpoint), "--dataset", "cityscapes",
            "--data-root", str(cityscapes_root), "--output", str(tmp_path), "--max-images", "1", "--workers", "0",
            "--input-size", "64x64"]
    for key, value in SEG_OVERRIDES.items():
        argv += ["--override", f"{key}={value}"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["images"] == 1 and metrics["input_size"] == [64, 64]
    lines = out.splitlines()
    assert "1 images (64x64)" in lines[0]
    assert lines[1].split() == ["exit", "mIoU", "%", "GFLOPs", "computed", "%"]
    assert lines[2].split()[:2] == ["1", f"{100 * metrics['exits'][0]['miou']:.2f}"]
    assert lines[6].split()[0] == "mean"


def test_bad_inputs_fail_with_clear_messages(cityscapes_root, seg_checkpoint, tmp_path, capsys):
    base = ["evaluate", "--checkpoint", str(seg_checkpoint), "--output", str(tmp_path), "--workers", "0"]
    assert main(base + ["--model", SEG_MODEL, "--dataset", "cityscapes", "--data-root", str(tmp_path / "none")]) == 2
    assert "leftImg8bit" in capsys.readouterr().err
    assert main(base + ["--model", SEG_MODEL, "--dataset", "nope", "--data-root", str(cityscapes_root)]) == 2
    assert "unknown dataset" in capsys.readouterr().err
    model = create_model(SEG_MODEL, num_classes=3)
    with pytest.raises(ValueError, match="3 outputs but .* 19 classes"):
        evaluate_model(model, build_dataset("cityscapes", cityscapes_root, "val", train=False))


# ----- MPII -----------------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def mpii_root(tmp_path_factory) -> Path:
    """Three people on two images, annotations as HRNet-pose's valid.json and the official gt_valid.mat (1-based)."""
    root = tmp_path_factory.mktemp("mpii")
    (root / "images").mkdir()
    (root / "annot").mkdir()
    rng = np.random.default_rng(3)
    people = []
    for image, centers in (("000000001.jpg", [(150.0, 130.0), (330.0, 150.0)]), ("000000002.jpg", [(200.0, 140.0)])):
        assert cv2.imwrite(str(root / "images" / image), rng.integers(0, 256, size=(300, 480, 3), dtype=np.uint8))
        for cx, cy in centers:
            joints = np.stack([cx + rng.uniform(-60, 60, 16), cy + rng.uniform(-80, 80, 16)], axis=1)
            visible = (rng.random(16) > 0.2).astype(int)
            head = np.array([[cx - 20, cy - 100], [cx + 20, cy - 60]])
            people.append({"image": image, "center": [cx, cy], "scale": 1.2, "joints": joints.tolist(),
                           "joints_vis": visible.tolist(), "head": head})
    (root / "annot" / "valid.json").write_text(json.dumps([{k: v for k, v in p.items() if k != "head"}
                                                          for p in people]))
    scipy.io.savemat(root / "annot" / "gt_valid.mat", {
        "pos_gt_src": np.stack([np.asarray(p["joints"]) for p in people], axis=-1),  # (16, 2, N)
        "jnt_missing": np.stack([1 - np.asarray(p["joints_vis"]) for p in people], axis=-1),  # (16, N)
        "headboxes_src": np.stack([p["head"] for p in people], axis=-1)})  # (2, 2, N)
    return root


class TargetHeatmapModel:
    """A stand-in pose model whose every exit returns the dataset's own training targets for the image it is given
    (its mirror image: the targets mirrored and a heatmap pixel to the left, as a real model's are), shifted by
    `offset` heatmap pixels in x: offset 0 is a perfect model."""

    def __init__(self, dataset, offset: int = 0):
        from anytime_perception.models import model_config

        self.config = model_config("adpc_hrnet_w32_pose")
        self.num_exits = 2
        self.training = False
        self.targets = {}
        for i in range(len(dataset)):
            sample = dataset[i]
            target = torch.roll(sample["target"], offset, dims=-1)
            left_by_one = torch.cat([target[..., 1:], target[..., -1:]], dim=-1)
            self.targets[self._key(sample["image"])] = target
            self.targets[self._key(sample["image"].flip(-1))] = flip_back(left_by_one[None], MPII_FLIP_PAIRS)[0]

    @staticmethod
    def _key(image):
        return image.numpy().tobytes()

    def parameters(self):
        yield torch.zeros(1)

    def eval(self):
        return self

    def train(self, mode=True):
        return self

    def anytime(self, images):
        from anytime_perception.models.anytime import ExitResult

        heatmaps = torch.stack([self.targets[self._key(image)] for image in images])
        b = images.shape[0]
        for index in (1, 2):
            yield ExitResult(index=index, num_exits=2, logits=heatmaps, confidence=heatmaps.amax(dim=1),
                             compute_mask=None, computed_fraction=torch.ones(b, dtype=torch.float64),
                             gflops=torch.full((b,), float(index), dtype=torch.float64))


def test_pckh_of_a_perfect_model_with_the_flip_test_is_100(mpii_root):
    dataset = build_dataset("mpii", mpii_root, "val", train=False)
    assert len(dataset) == 3
    seen = []
    metrics = evaluate_model(TargetHeatmapModel(dataset), dataset, batch_size=2,
                             on_batch=lambda batch, exits: seen.append(exits))
    assert metrics["flip_test"] is True and metrics["images"] == 3
    for e in metrics["exits"]:
        assert e["pckh"] == 1.0 and e["gflops"] == e["exit"]
    # The decoded keypoints land on the annotations (1-based in the files, 0-based here) within the heatmap's
    # quantisation: a heatmap pixel is 1.2 * 1.25 * 200 / 64 = 4.7 original pixels.
    keypoints = np.concatenate([exits[-1].keypoints for exits in seen])
    annotations = json.loads((mpii_root / "annot" / "valid.json").read_text())
    truth = np.array([p["joints"] for p in annotations]) - 1
    visible = np.array([p["joints_vis"] for p in annotations]) > 0
    assert np.abs(keypoints - truth)[visible].max() < 4.7


def test_pckh_drops_for_shifted_heatmaps_and_matches_the_formula(mpii_root):
    dataset = build_dataset("mpii", mpii_root, "val", train=False)
    seen: list[list[ExitOutput]] = []
    metrics = evaluate_model(TargetHeatmapModel(dataset, offset=4), dataset, flip_test=False,
                             on_batch=lambda batch, exits: seen.append(exits))
    assert metrics["flip_test"] is False
    keypoints = torch.from_numpy(np.concatenate([exits[0].keypoints for exits in seen]))
    mat = scipy.io.loadmat(mpii_root / "annot" / "gt_valid.mat")
    joints = torch.from_numpy(mat["pos_gt_src"].transpose(2, 0, 1) - 1.0)
    visible = torch.from_numpy(mat["jnt_missing"].T == 0)
    boxes = torch.from_numpy(mat["headboxes_src"].transpose(2, 0, 1) - 1.0)
    per_joint, mean = pckh(keypoints, joints, visible, boxes)
    assert metrics["exits"][0]["pckh"] == pytest.approx(mean / 100)
    # 4 heatmap pixels are 19 original pixels, the hit radius 0.5 x 0.6 x 57 = 17 px
    assert metrics["exits"][0]["pckh"] < 1.0


def _sharded_worker(rank: int, world: int, init_file: str, mpii_root: str, results) -> None:
    import torch.distributed as dist

    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=world)
    try:
        dataset = build_dataset("mpii", mpii_root, "val", train=False)
        names = []
        metrics = evaluate_model(TargetHeatmapModel(dataset, offset=4), dataset, flip_test=False,
                                 on_batch=lambda batch, exits: names.extend(m["name"] for m in batch["meta"]))
        results[rank] = (metrics, names)
    finally:
        dist.destroy_process_group()


def test_distributed_evaluation_shares_the_split_and_sums_the_counts(mpii_root, tmp_path):
    import torch.multiprocessing as mp

    dataset = build_dataset("mpii", mpii_root, "val", train=False)
    single = evaluate_model(TargetHeatmapModel(dataset, offset=4), dataset, flip_test=False)
    ctx = mp.get_context("spawn")
    results = ctx.Manager().dict()
    procs = [ctx.Process(target=_sharded_worker, args=(r, 2, str(tmp_path / "init"), str(mpii_root), results))
             for r in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=180)
    assert [p.exitcode for p in procs] == [0, 0]
    (first, names0), (second, names1) = results[0], results[1]
    assert sorted(names0 + names1) == sorted(dataset.names) and not set(names0) & set(names1)
    for metrics in (first, second):
        assert metrics["images"] == 3
        assert metrics["exits"] == single["exits"]


def test_pose_command_writes_keypoints_and_figures(mpii_root, tmp_path):
    checkpoint = tmp_path / "w32.pth"
    save_checkpoint(create_model("adpc_hrnet_w32_pose"), checkpoint)
    output = tmp_path / "out"
    argv = ["evaluate", "--model", "adpc_hrnet_w32_pose", "--checkpoint", str(checkpoint), "--dataset", "mpii",
            "--data-root", str(mpii_root), "--output", str(output), "--save-predictions", "--visualize", "1",
            "--workers", "0", "--input-size", "64x64", "--max-images", "2"]
    assert main(argv) == 0
    metrics = json.loads((output / "metrics.json").read_text())
    assert metrics["metric"] == "pckh" and metrics["images"] == 2 and len(metrics["exits"]) == 4
    assert len(metrics["exits"][0]["per_joint"]) == 16 and "ankle" in metrics["exits"][0]["groups"]
    people = json.loads((output / "predictions" / "exit4.json").read_text())["people"]
    assert [p["index"] for p in people] == [0, 1] and len(people[0]["joints"]) == 16
    assert (output / "visualize" / "00000_000000001_0.png").is_file()
    assert (output / "accuracy_vs_gflops.png").is_file()


# ----- figures ----------------------------------------------------------------------------------------------------
def test_accuracy_plot_has_units_legend_and_the_papers_points():
    figure = accuracy_vs_gflops_figure("adpc_hrnet_w48_seg", "miou", [40.0, 90.0, 250.0, 380.0], [40, 55, 70, 78])
    assert isinstance(figure, Figure)
    axes = figure.axes[0]
    assert "GFLOPs" in axes.get_xlabel() and axes.get_ylabel() == "mIoU (%)"
    legend = [t.get_text() for t in axes.get_legend().get_texts()]
    assert legend == ["adpc_hrnet_w48_seg (this evaluation)", "paper: HRNet-W48 EE+RH+CA (ADP-C)"]
    paper_line = axes.get_lines()[1]
    assert list(paper_line.get_xdata()) == [41.9, 93.9, 259.3, 387.1]
    assert list(paper_line.get_ydata()) == [44.3, 60.1, 76.8, 81.3]
    assert not paper_points("adpc_hrnet_w18s_seg")  # the paper's Table 1 has no W18 numbers
    assert {p.exit for p in paper_points("adpc_hrnet_w32_pose")} == {"4", "mean"}
