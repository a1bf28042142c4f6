"""MPII in the HRNet-pose layout (annot/*.json, annot/gt_valid.mat, images/) on tiny made-up files."""
import json

import numpy as np
import pytest

from conftest import dependency_missing

try:
    import cv2
    from scipy.io import savemat

    from anytime_perception.data import build_dataset, transforms
    from anytime_perception.data.labels import MPII_FLIP_PAIRS
except ImportError as error:
    dependency_missing(error, "OpenCV/scipy (the 'train' extra)")

IMAGE_WIDTH = 240


def make_person(image, cx, cy, scale, rng):
    joints = np.stack([rng.uniform(cx - 30, cx + 30, 16), rng.uniform(cy - 50, cy + 40, 16)], 1)
    visible = np.ones(16)
    visible[3] = 0
    joints[3] = [0, 0]  # MPII writes missing joints as 0 (1-based: one left of the first pixel)
    return {"image": image, "center": [cx, cy], "scale": scale, "joints": joints.round(1).tolist(),
            "joints_vis": visible.astype(int).tolist()}


def write_mpii(root, with_gt=True):
    rng = np.random.default_rng(0)
    (root / "annot").mkdir(parents=True)
    (root / "images").mkdir()
    for name in ("000001.jpg", "000002.jpg"):
        cv2.imwrite(str(root / "images" / name), rng.integers(0, 256, size=(200, IMAGE_WIDTH, 3), dtype=np.uint8))
    train = [make_person("000001.jpg", 100, 90, 0.6, rng), make_person("000002.jpg", 120, 100, 0.5, rng)]
    valid = [make_person("000002.jpg", 80, 90, 0.5, rng), make_person("000002.jpg", 160, 100, 0.55, rng),
             make_person("000001.jpg", 120, 80, 0.6, rng)]
    (root / "annot" / "train.json").write_text(json.dumps(train))
    (root / "annot" / "valid.json").write_text(json.dumps(valid))
    if with_gt:
        joints = np.array([p["joints"] for p in valid])  # (N, 16, 2)
        missing = 1 - np.array([p["joints_vis"] for p in valid])  # (N, 16)
        heads = np.array([[[p["center"][0] - 8, p["center"][1] - 60], [p["center"][0] + 8, p["center"][1] - 44]]
                          for p in valid])  # (N, 2 corners, 2 xy)
        savemat(str(root / "annot" / "gt_valid.mat"), {
            "pos_gt_src": joints.transpose(1, 2, 0), "jnt_missing": missing.T,
            "headboxes_src": heads.transpose(1, 2, 0), "dataset_joints": np.array([["rank"]] * 16, dtype=object)})
    return root, train, valid


def test_mpii_records_follow_the_authors_conversion(tmp_path):
    root, train, valid = write_mpii(tmp_path / "mpii")
    ds = build_dataset("mpii", root, "valid", train=False)
    assert ds.task == "pose" and len(ds) == 3 and ds.names == ["000002/0", "000002/1", "000001/0"]
    for record, person in zip(ds.records, valid):
        s = person["scale"]
        np.testing.assert_allclose(record.center, [person["center"][0] - 1, person["center"][1] + 15 * s - 1])
        np.testing.assert_allclose(record.scale, [1.25 * s, 1.25 * s])
        np.testing.assert_allclose(record.joints[:, :2], np.array(person["joints"]) - 1)
        np.testing.assert_array_equal(record.joints[:, 2], person["joints_vis"])
        cx, cy = person["center"]
        np.testing.assert_allclose(record.head_box, [[cx - 9, cy - 61], [cx + 7, cy - 45]])  # 0-based too
        assert record.image == root / "images" / person["image"]

    sample = ds[1]
    meta = sample["meta"]
    assert meta["rotation"] == 0 and not meta["flip"] and meta["name"] == "000002/1"
    np.testing.assert_allclose(meta["joints"][:, :2], np.array(valid[1]["joints"], np.float32) - 1)
    assert sample["target_weight"][3, 0] == 0 and not sample["target"][3].any()
    # Un-augmented crop: every visible joint's heatmap peak maps back onto the joint (within a heatmap pixel).
    target = sample["target"].numpy()
    flat = target.reshape(16, -1).argmax(1)
    peaks = np.stack([flat % 64, flat // 64], 1).astype(float)
    back = transforms.to_original(peaks[None], meta["center"], meta["scale"], (64, 64))[0]
    seen = meta["joints"][:, 2] > 0
    assert np.abs(back[seen] - meta["joints"][seen, :2]).max() <= meta["scale"][0] * 200 / 64

    train_ds = build_dataset("mpii", root, "train", train=False)
    assert len(train_ds) == 2 and np.isnan(train_ds.records[0].head_box).all()


def test_mpii_training_flip_swaps_joint_pairs(tmp_path):
    root, train, _ = write_mpii(tmp_path / "mpii")
    ds = build_dataset("mpii", root, "train", train=True, seed=5)
    flipped = 0
    for epoch in range(8):
        ds.set_epoch(epoch)
        sample = ds[0]
        meta = sample["meta"]
        if not meta["flip"]:
            continue
        flipped += 1
        joints = ds.records[0].joints
        m = transforms.crop_affine(meta["center"], meta["scale"], meta["rotation"], (256, 256))
        for left, right in MPII_FLIP_PAIRS:
            for channel, source in ((left, right), (right, left)):
                if joints[source, 2] == 0:
                    assert sample["target_weight"][channel, 0] == 0
                    continue
                mirrored = np.array([IMAGE_WIDTH - 1 - joints[source, 0], joints[source, 1]])
                centre = (transforms.apply_affine(mirrored, m) / 4 + 0.5).astype(int)
                if (centre >= 0).all() and (centre < 64).all():
                    peak = np.unravel_index(sample["target"][channel].argmax().item(), (64, 64))
                    assert (peak[1], peak[0]) == tuple(centre), (epoch, channel)
    assert flipped >= 2


def test_mpii_errors_name_the_file(tmp_path):
    root, _, _ = write_mpii(tmp_path / "nogt", with_gt=False)
    build_dataset("mpii", root, "train", train=True)  # train needs no gt_valid.mat
    with pytest.raises(FileNotFoundError, match=r"annot/gt_valid\.mat is missing"):
        build_dataset("mpii", root, "val", train=False)

    root, _, valid = write_mpii(tmp_path / "short")
    (root / "annot" / "valid.json").write_text(json.dumps(valid[:2]))
    with pytest.raises(ValueError, match="gt_valid.mat has 3 people but valid.json has 2"):
        build_dataset("mpii", root, "valid", train=False)

    root, _, _ = write_mpii(tmp_path / "noimage")
    (root / "images" / "000001.jpg").unlink()
    with pytest.raises(FileNotFoundError, match=r"images/000001\.jpg is missing"):
        build_dataset("mpii", root, "train", train=True)
    with pytest.raises(FileNotFoundError, match=r"annot/train\.json is missing"):
        build_dataset("mpii", tmp_path / "nothing", "train", train=True)
