"""The person models shipped inside the package: they load by name, know their labels, and on held-out frames
(vtest 606-739, never trained on; teacher labels in test/data/person_held_out) stay at the figures their model
cards report (`tools/make_default_models`, stage card, measured on the same frames and the same fp16 weights)."""
from pathlib import Path

import pytest
import torch

from conftest import dependency_missing

try:
    import cv2  # noqa: F401  (the datasets' image reader)
except ImportError as error:
    dependency_missing(error, "the 'train' extra (OpenCV)")

from anytime_perception.data.datasets import build_dataset
from anytime_perception.models import create_model, list_models
from anytime_perception.models.pretrained import PRETRAINED, card_figures, model_card, weights_path
from anytime_perception.ros.outputs import LabelMap
from anytime_perception.ros.weights import ModelLoadError, load_model
from anytime_perception.training.evaluate import evaluate_model

pytestmark = pytest.mark.usefixtures("one_intra_op_thread")

HELD_OUT = Path(__file__).resolve().parent / "data" / "person_held_out"
SEG, POSE = "adpc_hrnet_w18s_person_seg", "adpc_hrnet_w18s_person_pose"
# What may move between the card's measurement and this one: thread count and summation order only (same weights,
# same frames, same code), i.e. a pixel or a joint at a decision boundary.
MARGIN = 0.02
MAX_WEIGHTS_BYTES = 25_000_000


def test_every_shipped_model_is_registered_with_weights_card_and_figures():
    for name, shipped in PRETRAINED.items():
        assert name in list_models()
        size = weights_path(name).stat().st_size
        assert 1_000_000 < size < MAX_WEIGHTS_BYTES, f"{name}: {size} bytes"
        card = model_card(name).read_text()
        assert name in card and "held-out" in card and "Licences" in card
        figures = card_figures(name)
        assert figures["model"] == name and len(figures["evaluations"]["test_frames"]["accuracy"]) == 4


def test_pretrained_weights_load_with_their_labels():
    seg = create_model(SEG, pretrained=True)
    assert seg.config.outputs == 2
    assert seg.labels["class_names"] == ["background", "person"]
    label_map = LabelMap("seg", seg.config.outputs, seg.labels)
    assert label_map.names == ["background", "person"] and label_map.colors[1].tolist() == [220, 20, 60]
    pose = create_model(POSE, pretrained=True)
    assert pose.config.task == "pose" and pose.config.outputs == 16
    assert all(p.dtype == torch.float32 for p in pose.parameters())  # fp16 on disk, fp32 in memory


def test_models_without_shipped_weights_say_which_have_them():
    with pytest.raises(ValueError, match=SEG):
        create_model("adpc_hrnet_w48_seg", pretrained=True)
    with pytest.raises(ValueError, match="either"):
        create_model(SEG, checkpoint=str(weights_path(SEG)), pretrained=True)
    with pytest.raises(ModelLoadError, match="no weights shipped"):
        load_model("adpc_hrnet_w18s_seg", "pretrained", "cpu", None, "emulate")
    loaded = load_model(SEG, "pretrained", "cpu", None, "emulate")
    assert not loaded.untrained and "shipped weights" in loaded.weights


def _person_iou(name: str, execution: str) -> list[float]:
    model = create_model(name, pretrained=True, execution=execution)
    metrics = evaluate_model(model, build_dataset("folder", HELD_OUT, "val", train=False))
    person = metrics["class_names"].index("person")
    return [e["iou"][person] for e in metrics["exits"]]


@pytest.mark.parametrize("execution", ["emulate", "auto"])
def test_person_seg_stays_at_its_card_on_held_out_frames(execution):
    card = card_figures(SEG)["evaluations"]["test_frames"]["accuracy"]
    measured = _person_iou(SEG, execution)
    for exit_index, (got, reported) in enumerate(zip(measured, card), start=1):
        assert got >= reported - MARGIN, f"exit {exit_index}: person IoU {got:.3f}, card {reported:.3f}"
    assert measured[-1] > 0.0  # the all-background baseline's person IoU


def test_person_pose_stays_at_its_card_on_held_out_people():
    card = card_figures(POSE)["evaluations"]["test_frames"]["accuracy"]
    model = create_model(POSE, pretrained=True)
    dataset = build_dataset("folder_pose", HELD_OUT, "val", train=False, input_size=PRETRAINED[POSE].input_size)
    measured = [e["pckh"] for e in evaluate_model(model, dataset)["exits"]]
    for exit_index, (got, reported) in enumerate(zip(measured, card), start=1):
        assert got >= reported - MARGIN, f"exit {exit_index}: PCKh {got:.3f}, card {reported:.3f}"
