"""Cityscapes in its download layout, on a tiny made-up copy: id mapping, samples, errors."""
import numpy as np
import pytest
import torch

from conftest import dependency_missing

try:
    import cv2
    from cityscapesscripts.helpers.labels import id2label

    from anytime_perception.data import build_dataset
    from anytime_perception.data.cityscapes import CLASS_WEIGHTS, label_id_to_train_id
    from anytime_perception.data.labels import CITYSCAPES
except ImportError as error:
    dependency_missing(error, "OpenCV/cityscapesscripts (the 'train' extra)")

FRAMES = {"aachen": ["aachen_000000_000019", "aachen_000001_000019"], "bonn": ["bonn_000000_000019"]}
SIZE = (32, 64)


def write_cityscapes(root, split="train", frames=FRAMES):
    rng = np.random.default_rng(0)
    for city, stems in frames.items():
        (root / "leftImg8bit" / split / city).mkdir(parents=True, exist_ok=True)
        (root / "gtFine" / split / city).mkdir(parents=True, exist_ok=True)
        for stem in stems:
            image = rng.integers(0, 256, size=SIZE + (3,), dtype=np.uint8)
            cv2.imwrite(str(root / "leftImg8bit" / split / city / f"{stem}_leftImg8bit.png"), image)
            label_ids = rng.integers(0, 34, size=SIZE).astype(np.uint8)  # every label id, trained or not
            cv2.imwrite(str(root / "gtFine" / split / city / f"{stem}_gtFine_labelIds.png"), label_ids)
            # The other gtFine files of the download are there too and must be ignored.
            cv2.imwrite(str(root / "gtFine" / split / city / f"{stem}_gtFine_color.png"), image)
    return root


def test_label_ids_map_to_train_ids_as_cityscapesscripts_says():
    table = label_id_to_train_id()
    for label_id in range(256):
        label = id2label.get(label_id)
        expected = label.trainId if label is not None and 0 <= label.trainId < 255 else 255
        assert table[label_id] == expected, label_id
    assert sorted(set(table.tolist()) - {255}) == list(range(19))
    # The authors' list (official-code-notes section 5), as a cross-check of the package's table.
    authors = {7: 0, 8: 1, 11: 2, 12: 3, 13: 4, 17: 5, 19: 6, 20: 7, 21: 8, 22: 9, 23: 10, 24: 11, 25: 12, 26: 13,
               27: 14, 28: 15, 31: 16, 32: 17, 33: 18}
    assert {i: int(table[i]) for i in range(34) if table[i] != 255} == authors
    # The class names the model heads use are the table's, in train id order.
    assert [c.name for c in CITYSCAPES] == [id2label[i].name for i in sorted(authors)]


def test_cityscapes_evaluation_samples(tmp_path):
    root = write_cityscapes(tmp_path / "cs", "val")
    ds = build_dataset("cityscapes", root, "val", train=False)
    assert ds.task == "seg" and ds.num_classes == 19 and ds.ignore_index == 255 and len(ds) == 3
    assert ds.names == ["aachen/aachen_000000_000019", "aachen/aachen_000001_000019", "bonn/bonn_000000_000019"]
    assert ds.class_names[0] == "road" and ds.colors[0] == (128, 64, 128)
    assert torch.equal(ds.class_weights, torch.tensor(CLASS_WEIGHTS))
    assert ds.class_weights.shape == (19,) and ds.class_weights[0] == pytest.approx(0.8373)
    sample = ds[2]
    raw = cv2.imread(str(root / "gtFine/val/bonn/bonn_000000_000019_gtFine_labelIds.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(sample["label"].numpy(), label_id_to_train_id()[raw])
    assert sample["image"].shape == (3,) + SIZE and sample["orig_size"] == SIZE
    assert sample["name"] == "bonn/bonn_000000_000019"
    # The image is RGB: undoing the normalisation gives the file's pixels with channels reversed.
    bgr = cv2.imread(str(root / "leftImg8bit/val/bonn/bonn_000000_000019_leftImg8bit.png"))
    mean, std = torch.tensor([0.485, 0.456, 0.406]), torch.tensor([0.229, 0.224, 0.225])
    rgb = (sample["image"].permute(1, 2, 0) * std + mean) * 255
    np.testing.assert_allclose(rgb.numpy(), bgr[:, :, ::-1], atol=1e-3)

    small = build_dataset("cityscapes", root, "valid", train=False, input_size=(16, 32))
    assert small.split == "val"
    sample = small[0]
    assert sample["image"].shape == (3, 16, 32) and sample["label"].shape == SIZE and sample["orig_size"] == SIZE


def test_cityscapes_training_crops(tmp_path):
    root = write_cityscapes(tmp_path / "cs")
    ds = build_dataset("cityscapes", root, "train", train=True, crop_size=(24, 40), base_size=64)
    assert ds.base_size == 64 and ds.crop_size == (24, 40)
    assert build_dataset("cityscapes", root, "train", train=True).crop_size == (512, 1024)
    assert build_dataset("cityscapes", root, "train", train=True).base_size == 2048
    for epoch in range(3):
        ds.set_epoch(epoch)
        for i in range(len(ds)):
            sample = ds[i]
            assert sample["image"].shape == (3, 24, 40) and sample["label"].shape == (24, 40)
            assert set(sample["label"].unique().tolist()) <= set(range(19)) | {255}
            assert "orig_size" not in sample


def test_cityscapes_errors_name_root_and_file(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"leftImg8bit/train is missing"):
        build_dataset("cityscapes", tmp_path / "empty", "train", train=True)
    root = write_cityscapes(tmp_path / "cs")
    (root / "gtFine/train/aachen/aachen_000001_000019_gtFine_labelIds.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"aachen_000001_000019_gtFine_labelIds\.png is missing") as info:
        build_dataset("cityscapes", root, "train", train=True)
    assert str(root) in str(info.value)
    with pytest.raises(ValueError, match="split"):
        build_dataset("cityscapes", root, "trainextra", train=True)
