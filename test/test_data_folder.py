"""The folder layout (users' data and the label tool's output), the dataset API, RNG determinism and DataLoader use."""
import json

import numpy as np
import pytest
import torch

from conftest import dependency_missing

try:
    import cv2
    import yaml

    from anytime_perception.data import build_dataset, collate, transforms, worker_init_fn
    from anytime_perception.data.labels import MPII_FLIP_PAIRS, MPII_JOINTS
except ImportError as error:
    dependency_missing(error, "OpenCV/PyYAML (the 'train' extra)")

CLASSES = {"names": ["background", "person", "car"], "colors": [[0, 0, 0], [220, 20, 60], [0, 0, 142]],
           "ignore_index": 255}


def write_seg_folder(root, stems=("a", "b", "c"), size=(24, 32), classes=CLASSES, splits=None):
    (root / "images").mkdir(parents=True)
    (root / "labels").mkdir()
    (root / "classes.yaml").write_text(yaml.safe_dump(classes))
    rng = np.random.default_rng(0)
    for i, stem in enumerate(stems):
        image = rng.integers(0, 256, size=size + (3,), dtype=np.uint8)
        cv2.imwrite(str(root / "images" / f"{stem}.{'png' if i % 2 else 'jpg'}"), image)
        label = rng.integers(0, len(classes["names"]), size=size).astype(np.uint8)
        label[0] = 255
        cv2.imwrite(str(root / "labels" / f"{stem}.png"), label)
    for split, listed in (splits or {}).items():
        (root / "splits").mkdir(exist_ok=True)
        (root / "splits" / f"{split}.txt").write_text("\n".join(listed) + "\n")
    return root


def person(x0, y0, spread=6.0, **extra):
    """16 visible joints laid out on a small grid starting at (x0, y0), so every joint has its own place."""
    joints = [[x0 + spread * (j % 4), y0 + spread * (j // 4) * 2, 1] for j in range(16)]
    return {"joints": joints, **extra}


def write_pose_folder(root, people_per_image, size=(120, 160)):
    (root / "images").mkdir(parents=True)
    (root / "poses").mkdir()
    for stem, people in people_per_image.items():
        image = np.full(size + (3,), 90, np.uint8)
        cv2.imwrite(str(root / "images" / f"{stem}.png"), image)
        (root / "poses" / f"{stem}.json").write_text(json.dumps({"people": people}))
    return root


# ----- segmentation ---------------------------------------------------------------------------------------------
def test_folder_segmentation_samples(tmp_path):
    root = write_seg_folder(tmp_path / "data")
    ds = build_dataset("folder", root, "train", train=True, crop_size=(16, 20))
    assert ds.task == "seg" and ds.split == "train" and ds.root == root and len(ds) == 3
    assert ds.num_classes == 3 and ds.class_names == CLASSES["names"] and ds.ignore_index == 255
    assert ds.colors == [(0, 0, 0), (220, 20, 60), (0, 0, 142)] and ds.class_weights is None
    assert ds.names == ["a", "b", "c"]
    sample = ds[1]
    assert sample["image"].shape == (3, 16, 20) and sample["image"].dtype == torch.float32
    assert sample["label"].shape == (16, 20) and sample["label"].dtype == torch.int64
    assert set(sample["label"].unique().tolist()) <= {0, 1, 2, 255} and sample["name"] == "b"

    ev = build_dataset("folder", root, "val", train=False)
    sample = ev[0]
    assert sample["image"].shape == (3, 24, 32) and sample["orig_size"] == (24, 32)
    label = cv2.imread(str(root / "labels" / "a.png"), cv2.IMREAD_UNCHANGED)
    np.testing.assert_array_equal(sample["label"].numpy(), label)
    resized = build_dataset("folder", root, "val", train=False, input_size=(32, 64))[0]
    assert resized["image"].shape == (3, 32, 64) and resized["label"].shape == (24, 32)
    assert resized["orig_size"] == (24, 32)


def test_folder_classes_options_and_splits(tmp_path):
    classes = dict(CLASSES, weights=[0.5, 1.0, 2.0], base_size=64)
    del classes["colors"]
    root = write_seg_folder(tmp_path / "data", classes=classes, splits={"train": ["a", "c.png"], "val": ["b"]})
    ds = build_dataset("folder", root, "train", train=True)
    assert torch.equal(ds.class_weights, torch.tensor([0.5, 1.0, 2.0]))
    assert ds.base_size == 64 and ds.names == ["a", "c"] and len(ds.colors) == 3
    assert ds.crop_size == (512, 512)
    assert build_dataset("folder", root, "val", train=False).names == ["b"]
    with pytest.raises(FileNotFoundError, match=r"test\.txt.*\['train', 'val'\]"):
        build_dataset("folder", root, "test", train=False)


@pytest.mark.parametrize("change, message", [
    ({"names": []}, "'names'"),
    ({"names": ["a", "a", "b"]}, "repeat"),
    ({"colors": [[0, 0, 0]]}, "'colors'"),
    ({"ignore_index": 1}, "'ignore_index'"),
    ({"weights": [1, 2]}, "'weights'"),
    ({"base_size": 0}, "'base_size'"),
    ({"colours": []}, "unknown keys"),
])
def test_folder_classes_yaml_is_validated(tmp_path, change, message):
    root = write_seg_folder(tmp_path / "data")
    (root / "classes.yaml").write_text(yaml.safe_dump(dict(CLASSES, **change)))
    with pytest.raises(ValueError, match=message) as info:
        build_dataset("folder", root, "train", train=True)
    assert "classes.yaml" in str(info.value)


def test_folder_errors_name_the_missing_or_bad_file(tmp_path):
    root = write_seg_folder(tmp_path / "data")
    (root / "labels" / "b.png").unlink()
    with pytest.raises(FileNotFoundError, match=r"labels/b\.png is missing for image .*images/b\.png"):
        build_dataset("folder", root, "train", train=True)

    root = write_seg_folder(tmp_path / "bad")
    cv2.imwrite(str(root / "labels" / "c.png"), np.full((24, 32), 7, np.uint8))
    ds = build_dataset("folder", root, "train", train=False)
    ds[0]
    with pytest.raises(ValueError, match=r"labels/c\.png has values \[7\]"):
        ds[2]

    (root / "classes.yaml").unlink()
    with pytest.raises(FileNotFoundError, match="classes.yaml is missing"):
        build_dataset("folder", root, "train", train=True)
    with pytest.raises(FileNotFoundError, match="images is missing"):
        build_dataset("folder_pose", tmp_path / "nowhere", "train", train=True)
    with pytest.raises(ValueError, match="unknown dataset 'coco'"):
        build_dataset("coco", root, "train", train=True)


# ----- pose -----------------------------------------------------------------------------------------------------
def test_folder_pose_records_derive_box_and_head(tmp_path):
    given = person(20, 10, head_box=[1, 2, 11, 12], center=[50, 40], scale=0.5)
    root = write_pose_folder(tmp_path / "poses", {"img": [person(40, 20), given]})
    ds = build_dataset("folder_pose", root, "valid", train=False)
    assert ds.task == "pose" and len(ds) == 2 and ds.names == ["img/0", "img/1"]
    assert ds.num_joints == 16 and ds.joint_names == list(MPII_JOINTS) and ds.flip_pairs == MPII_FLIP_PAIRS
    assert ds.image_size == (256, 256) and ds.heatmap_size == (64, 64)
    derived, explicit = ds.records
    # Visible joints span x 40..58, y 20..56: centre (49, 38), side max(18, 36) * 1.25.
    np.testing.assert_allclose(derived.center, [49, 38])
    np.testing.assert_allclose(derived.scale, [36 * 1.25 / 200] * 2)
    neck, top = np.array(person(40, 20)["joints"][8][:2]), np.array(person(40, 20)["joints"][9][:2])
    side = np.linalg.norm(top - neck)
    np.testing.assert_allclose(derived.head_box, [(neck + top) / 2 - side / 2, (neck + top) / 2 + side / 2])
    np.testing.assert_allclose(explicit.center, [50, 40])
    np.testing.assert_allclose(explicit.scale, [0.5, 0.5])
    np.testing.assert_allclose(explicit.head_box, [[1, 2], [11, 12]])

    sample = ds[0]
    meta = sample["meta"]
    assert sample["image"].shape == (3, 256, 256) and sample["target"].shape == (16, 64, 64)
    assert sample["target_weight"].shape == (16, 1) and sample["target_weight"].dtype == torch.float32
    assert meta["index"] == 0 and meta["name"] == "img/0" and meta["rotation"] == 0.0 and not meta["flip"]
    assert meta["joints"].shape == (16, 3) and meta["joints"].dtype == np.float32
    assert meta["center"].dtype == np.float32 and meta["scale"].shape == (2,) and meta["head_box"].shape == (2, 2)
    # Evaluation round trip: heatmap peaks mapped back land within one heatmap pixel of the joints.
    target = sample["target"].numpy()
    peaks = np.stack(np.unravel_index(target.reshape(16, -1).argmax(1), (64, 64))[::-1], 1).astype(float)
    back = transforms.to_original(peaks[None], meta["center"], meta["scale"], ds.heatmap_size)[0]
    pixel = meta["scale"][0] * 200 / 64
    assert np.abs(back - meta["joints"][:, :2]).max() <= pixel


def test_folder_pose_without_head_or_joints(tmp_path):
    hidden_head = person(40, 20)
    hidden_head["joints"][9][2] = 0
    root = write_pose_folder(tmp_path / "p", {"img": [hidden_head]})
    assert np.isnan(build_dataset("folder_pose", root, "train", train=False).records[0].head_box).all()

    lonely = person(40, 20)
    for joint in lonely["joints"][1:]:
        joint[2] = 0
    root = write_pose_folder(tmp_path / "q", {"img": [lonely]})
    with pytest.raises(ValueError, match=r"img\.json: people\[0\].*two visible joints"):
        build_dataset("folder_pose", root, "train", train=True)
    root = write_pose_folder(tmp_path / "r", {"img": [{"joints": [[0, 0, 1]] * 15}]})
    with pytest.raises(ValueError, match=r"people\[0\]\.joints"):
        build_dataset("folder_pose", root, "train", train=True)
    (root / "poses" / "img.json").unlink()
    with pytest.raises(FileNotFoundError, match=r"poses/img\.json is missing"):
        build_dataset("folder_pose", root, "train", train=True)


def peak(heatmap: np.ndarray) -> np.ndarray:
    y, x = np.unravel_index(heatmap.argmax(), heatmap.shape)
    return np.array([x, y])


def test_pose_training_augmentation_moves_image_and_targets_together(tmp_path):
    """A bright dot on l_wrist in the image must follow that joint's heatmap (or r_wrist's when flipped)."""
    people = person(60, 30, center=[69, 48], scale=0.5)
    root = write_pose_folder(tmp_path / "p", {"img": [people]})
    image = np.full((120, 160, 3), 90, np.uint8)
    l_wrist = MPII_JOINTS.index("l_wrist")
    x, y = people["joints"][l_wrist][:2]
    cv2.circle(image, (int(x), int(y)), 2, (255, 255, 255), -1)
    cv2.imwrite(str(root / "images" / "img.png"), image)

    ds = build_dataset("folder_pose", root, "train", train=True)
    seen_flip, seen_rotation, checked = set(), set(), 0
    for epoch in range(12):
        ds.set_epoch(epoch)
        sample = ds[0]
        meta, target = sample["meta"], sample["target"].numpy()
        joints = meta["joints"].astype(np.float64)
        if meta["flip"]:
            joints = transforms.flip_joints(joints, 160, MPII_FLIP_PAIRS)
        expected = transforms.apply_affine(joints[:, :2], transforms.crop_affine(
            meta["center"], meta["scale"], meta["rotation"], (256, 256))) / 4
        for j in range(16):
            centre = (expected[j] + 0.5).astype(int)
            if (centre >= 0).all() and (centre < 64).all():  # the peak of joints further out is cut off
                assert sample["target_weight"][j, 0] == 1
                assert (peak(target[j]) == centre).all(), (epoch, j)
        channel = MPII_JOINTS.index("r_wrist") if meta["flip"] else l_wrist
        brightness = sample["image"].numpy().sum(0)
        ys, xs = np.nonzero(brightness > brightness.max() - 0.5)
        dot = np.array([xs.mean(), ys.mean()])  # centre of the (magnified) dot in the crop
        if (np.abs(expected[channel] * 4 - 128) < 100).all():  # dot not cut by the crop's border
            assert np.abs(dot - expected[channel] * 4).max() <= 2.0, epoch
            checked += 1
        seen_flip.add(meta["flip"])
        seen_rotation.add(meta["rotation"] != 0)
        base_scale = ds.records[0].scale[0]
        assert 0.75 * base_scale - 1e-6 <= meta["scale"][0] <= 1.25 * base_scale + 1e-6
    assert seen_flip == {False, True} and seen_rotation == {False, True} and checked >= 8


def test_pose_joint_outside_the_crop_gets_no_weight(tmp_path):
    far = person(60, 30, center=[70, 50], scale=0.3)
    far["joints"][0] = [150, 110, 1]  # 60 px crop around (70, 50): far outside
    far["joints"][1][2] = 0
    root = write_pose_folder(tmp_path / "p", {"img": [far]})
    sample = build_dataset("folder_pose", root, "train", train=False)[0]
    weights = sample["target_weight"][:, 0]
    assert weights[0] == 0 and weights[1] == 0 and (weights[2:] == 1).all()
    assert not sample["target"][0].any() and not sample["target"][1].any()


# ----- determinism and loading ------------------------------------------------------------------------------------
def test_augmentation_depends_only_on_seed_epoch_index(tmp_path):
    root = write_seg_folder(tmp_path / "data", size=(40, 48))
    ds = build_dataset("folder", root, "train", train=True, crop_size=(24, 24), seed=3)
    first = [ds[i]["image"] for i in range(3)]
    again = build_dataset("folder", root, "train", train=True, crop_size=(24, 24), seed=3)
    for i in (2, 0, 1):  # order does not matter
        assert torch.equal(again[i]["image"], first[i])
    ds.set_epoch(1)
    assert ds.epoch == 1
    assert any(not torch.equal(ds[i]["image"], first[i]) for i in range(3))
    other_seed = build_dataset("folder", root, "train", train=True, crop_size=(24, 24), seed=4)
    assert any(not torch.equal(other_seed[i]["image"], first[i]) for i in range(3))
    with pytest.raises(ValueError, match="epoch"):
        ds.set_epoch(-1)


def test_dataloader_workers_match_direct_indexing(tmp_path):
    root = write_seg_folder(tmp_path / "data", stems=tuple("abcdef"), size=(40, 48))
    ds = build_dataset("folder", root, "train", train=True, crop_size=(24, 24), seed=1)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, collate_fn=collate,
                                         worker_init_fn=worker_init_fn, persistent_workers=True)
    for epoch in (0, 1):
        ds.set_epoch(epoch)  # reaches the persistent workers through shared memory
        batches = list(loader)
        assert [b["name"] for b in batches] == [["a", "b"], ["c", "d"], ["e", "f"]]
        images = torch.cat([b["image"] for b in batches])
        labels = torch.cat([b["label"] for b in batches])
        assert images.shape == (6, 3, 24, 24) and labels.shape == (6, 24, 24)
        for i in range(6):
            assert torch.equal(images[i], ds[i]["image"])
            assert torch.equal(labels[i], ds[i]["label"])


def test_collate_pose_batch_keeps_meta_list(tmp_path):
    root = write_pose_folder(tmp_path / "p", {"img": [person(40, 20), person(60, 30)]})
    ds = build_dataset("folder_pose", root, "train", train=True)
    batch = collate([ds[0], ds[1]])
    assert torch.equal(collate([ds[1], ds[0]])["target"][0], batch["target"][1])
    assert batch["image"].shape == (2, 3, 256, 256) and batch["target"].shape == (2, 16, 64, 64)
    assert batch["target_weight"].shape == (2, 16, 1)
    assert [m["name"] for m in batch["meta"]] == ["img/0", "img/1"]
    with pytest.raises(ValueError, match="different shapes"):
        collate([{"image": torch.zeros(3, 4, 4)}, {"image": torch.zeros(3, 4, 5)}])
    with pytest.raises(ValueError, match=r"\['crop_size'\] do not apply"):
        build_dataset("folder_pose", root, "train", train=True, crop_size=(64, 64))
