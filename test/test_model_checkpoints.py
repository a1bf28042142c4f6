"""Checkpoint layouts, built here with the exact key layouts of the official files, and the error cases."""
import logging

import pytest
import torch

from anytime_perception import create_model
from anytime_perception.models import AnytimeHRNet, ModelConfig
from anytime_perception.models.checkpoint import CheckpointError, load_checkpoint, save_checkpoint


def randomised(model):
    with torch.no_grad():
        for name, t in model.state_dict().items():
            if t.is_floating_point() and not name.endswith("square_dis"):
                t.copy_(torch.rand_like(t) + 0.5 if name.endswith("Lambda") else torch.randn_like(t))
    return model


def assert_same(a, b, keys=None):
    sa, sb = a.state_dict(), b.state_dict()
    for k in keys if keys is not None else sa:
        assert torch.equal(sa[k], sb[k]), k


@pytest.fixture(scope="module")
def adpc():
    torch.manual_seed(1)
    return randomised(create_model("adpc_hrnet_w18s_seg"))


def authors_layout(model, drop=()):
    """What the authors' train_ee.py saves: FullEEModel(model, loss).state_dict()."""
    state = {f"model.{k}": v for k, v in model.state_dict().items() if not k.endswith(drop)}
    state["loss.criterion.weight"] = torch.rand(19)
    return state


def test_authors_adpc_layout(tmp_path, adpc):
    path = tmp_path / "adpc_w18.pth"
    torch.save(authors_layout(adpc), path)
    model = create_model("adpc_hrnet_w18s_seg", checkpoint=path)
    assert_same(adpc, model)
    report = load_checkpoint(create_model("adpc_hrnet_w18s_seg"), path)
    assert report.layout == "anytime" and report.kept_initialised == [] and report.dropped == ["loss.criterion.weight"]


def test_ee_rh_checkpoint_starts_an_adaptive_model_with_initial_lambda(tmp_path, adpc, caplog):
    path = tmp_path / "rh_w18.pth"
    torch.save(authors_layout(adpc, drop=(".Lambda", ".square_dis")), path)
    model = create_model("adpc_hrnet_w18s_seg")
    with caplog.at_level(logging.WARNING):
        report = load_checkpoint(model, path)
    assert len([k for k in report.defaulted if k.endswith(".Lambda")]) == 143
    assert all(v.item() == 3.0 for k, v in model.state_dict().items() if k.endswith(".Lambda"))
    assert "Lambda" in caplog.text
    assert_same(adpc, model, [k for k in adpc.state_dict() if not k.endswith(("Lambda", "square_dis"))])


def test_adpc_checkpoint_into_non_adaptive_model_drops_rbf_parameters(tmp_path, adpc):
    path = tmp_path / "adpc.pth"
    torch.save(authors_layout(adpc), path)
    model = create_model("rh_hrnet_w18s_seg", checkpoint=path)
    assert_same(adpc, model, list(model.state_dict()))


def test_hrnet_segmentation_layout(tmp_path, caplog):
    torch.manual_seed(2)
    base = randomised(create_model("hrnet_w18s_seg"))
    state = {f"model.{k}": v for k, v in base.state_dict().items() if not k.endswith("num_batches_tracked")}
    state["loss.criterion.weight"] = torch.ones(19)
    path = tmp_path / "hrnet_w18_small_v2_cityscapes.pth"
    torch.save(state, path)
    assert_same(base, create_model("hrnet_w18s_seg", checkpoint=path),
                [k for k in base.state_dict() if not k.endswith("num_batches_tracked")])
    rh = create_model("rh_hrnet_w18s_seg")
    with caplog.at_level(logging.WARNING):
        report = load_checkpoint(rh, path)
    assert report.layout == "hrnet_seg" and report.kept_initialised == ["exit1", "exit2", "exit3"]
    assert "exit1, exit2, exit3" in caplog.text


def test_hrnet_pose_layout_in_a_training_wrapper(tmp_path):
    torch.manual_seed(3)
    base = randomised(create_model("hrnet_w32_pose"))
    assert "final_layer.weight" in base.state_dict() and "stage4.2.fuse_layers.1.0.0.weight" not in base.state_dict()
    path = tmp_path / "pose_hrnet_w32_256x256.pth"
    # the pose code's checkpoint.pth wraps the weights, saved from DataParallel
    torch.save({"epoch": 210, "perf": 0.9, "state_dict": {f"module.{k}": v for k, v in base.state_dict().items()}},
               path)
    model = create_model("hrnet_w32_pose", checkpoint=path)
    assert_same(base, model)
    assert load_checkpoint(create_model("adpc_hrnet_w32_pose"), path).layout == "hrnet_pose"


def imagenet_file(tmp_path, backbone):
    torch.manual_seed(4)
    classifier = randomised(AnytimeHRNet(ModelConfig(backbone=backbone, task="seg", exit_head="none")))
    state = {k: v for k, v in classifier.state_dict().items() if not k.startswith("last_layer")}
    # the classification head of HRNet-Image-Classification, ignored by the loader
    state.update({"incre_modules.0.0.conv1.weight": torch.randn(32, 18, 1, 1),
                  "downsamp_modules.0.0.weight": torch.randn(256, 128, 3, 3),
                  "final_layer.0.weight": torch.randn(2048, 1024, 1, 1),
                  "classifier.weight": torch.randn(1000, 2048), "classifier.bias": torch.randn(1000)})
    path = tmp_path / f"{backbone}_imagenet.pth"
    torch.save(state, path)
    return classifier, path


def test_imagenet_layout_loads_the_backbone_only(tmp_path):
    classifier, path = imagenet_file(tmp_path, "hrnet_w18s")
    model = create_model("adpc_hrnet_w18s_seg")
    report = load_checkpoint(model, path)
    assert report.layout == "imagenet"
    assert report.kept_initialised == ["exit1", "exit2", "exit3", "last_layer"]
    assert_same(classifier, model, [k for k in classifier.state_dict() if k.startswith(("conv1", "layer1", "stage4"))])
    assert "classifier.weight" in report.dropped


def test_imagenet_w32_into_pose_drops_the_unused_fuse_rows(tmp_path):
    _, path = imagenet_file(tmp_path, "hrnet_w32")
    state = torch.load(path)
    # the classification network fuses into every branch in its last module; the pose network into branch 0 only
    state.update({"stage4.2.fuse_layers.1.0.0.0.weight": torch.randn(64, 32, 3, 3),
                  "stage4.2.fuse_layers.1.0.0.1.running_mean": torch.randn(64),
                  "stage4.2.fuse_layers.3.2.0.0.weight": torch.randn(256, 128, 3, 3)})
    torch.save(state, path)
    report = load_checkpoint(create_model("hrnet_w32_pose"), path)
    assert any(k.startswith("stage4.2.fuse_layers.1.") for k in report.dropped)
    assert report.kept_initialised == ["final_layer"]


def test_native_round_trip_and_config_check(tmp_path, adpc):
    path = tmp_path / "native.pt"
    save_checkpoint(adpc, path, note="test")
    assert_same(adpc, create_model("adpc_hrnet_w18s_seg", checkpoint=path))
    with pytest.raises(CheckpointError, match="exit_head='rh'"):
        create_model("ee_hrnet_w18s_seg", checkpoint=path)


def test_missing_file_and_not_a_checkpoint(tmp_path):
    with pytest.raises(CheckpointError, match="no such checkpoint file"):
        create_model("rh_hrnet_w18s_seg", checkpoint=tmp_path / "nope.pth")
    text = tmp_path / "weights.pth"
    text.write_text("these are not weights")
    with pytest.raises(CheckpointError, match=r"weights\.pth: not a PyTorch checkpoint"):
        create_model("rh_hrnet_w18s_seg", checkpoint=text)
    listing = tmp_path / "list.pth"
    torch.save([1, 2, 3], listing)
    with pytest.raises(CheckpointError, match="not a state dict"):
        create_model("rh_hrnet_w18s_seg", checkpoint=listing)


def test_wrong_architecture_fails_before_touching_weights(tmp_path, adpc):
    path = tmp_path / "w18.pth"
    torch.save(authors_layout(adpc), path)
    w48 = create_model("adpc_hrnet_w48_seg")
    before = {k: v.clone() for k, v in w48.state_dict().items()}
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(w48, path)
    message = str(err.value)
    assert "w18.pth" in message and ("shape mismatch" in message or "missing" in message)
    assert "layer1.0.conv1.weight" not in message or "(64, 64, 1, 1)" in message
    after = w48.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before), "a failed load changed weights"


def test_shape_mismatch_names_the_key(tmp_path, adpc):
    state = authors_layout(adpc)
    state["model.exit2.13.weight"] = torch.randn(21, 64, 1, 1)
    state["model.exit2.13.bias"] = torch.randn(21)
    path = tmp_path / "classes21.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"classes21\.pth: 2 shape mismatch.*exit2\.13\.weight file \(21, 64, 1, 1\)"):
        create_model("adpc_hrnet_w18s_seg", checkpoint=path)


def test_missing_and_unexpected_keys(tmp_path, adpc):
    state = authors_layout(adpc)
    del state["model.stage3.1.branches.0.0.conv1.weight"]
    path = tmp_path / "partial.pth"
    torch.save(state, path)
    with pytest.raises(CheckpointError, match=r"1 key\(s\) missing.*stage3\.1\.branches\.0\.0\.conv1\.weight"):
        create_model("adpc_hrnet_w18s_seg", checkpoint=path)
    seg = tmp_path / "seg.pth"
    torch.save(authors_layout(adpc), seg)
    with pytest.raises(CheckpointError, match="no place in the model"):
        create_model("adpc_hrnet_w32_pose", checkpoint=seg)


def test_non_finite_values_are_refused_before_touching_weights(tmp_path, adpc):
    state = authors_layout(adpc)
    state["model.stage2.0.branches.0.0.conv1.weight"][0, 0, 0, 0] = float("nan")
    state["model.exit1.2.running_var"][3] = float("inf")
    state["loss.criterion.weight"][0] = float("nan")  # dropped by rule: never loaded, so not a reason to refuse
    path = tmp_path / "diverged.pth"
    torch.save(state, path)
    model = create_model("adpc_hrnet_w18s_seg")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(CheckpointError, match=r"diverged\.pth: 2 tensor\(s\) hold NaN or infinite values.*"
                                              r"exit1\.2\.running_var, stage2\.0\.branches\.0\.0\.conv1\.weight"):
        load_checkpoint(model, path)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items()), "a refused load changed weights"
    state["model.stage2.0.branches.0.0.conv1.weight"][0, 0, 0, 0] = 0.0
    state["model.exit1.2.running_var"][3] = 1.0
    torch.save(state, path)
    assert load_checkpoint(model, path).layout == "anytime"  # the same file with finite values loads
