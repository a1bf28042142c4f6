"""The model core against outputs of the authors' code (W18-small ADP-C, T = 0.8, batch of two images)."""
import pytest
import torch

from anytime_perception import create_model
from anytime_perception.models.flops import gflops_for_fractions
from conftest import OFFICIAL_REF


@pytest.fixture(scope="module")
def model(official_ref):
    threshold = official_ref["config"]["conf_thre_T"]
    # The reference file itself is in the authors' training-checkpoint layout (state_dict with `model.` keys).
    return create_model("adpc_hrnet_w18s_seg", checkpoint=OFFICIAL_REF, conf_threshold=threshold)


@pytest.fixture(scope="module")
def masked_results(model, official_ref):
    with torch.no_grad():
        return list(model.anytime(official_ref["input"]))


def test_state_dict_keys_are_the_authors(model, official_ref):
    theirs = {k[len("model."):] for k in official_ref["state_dict"] if k.startswith("model.")}
    assert set(model.state_dict()) == theirs
    lambdas = [k for k in theirs if k.endswith(".Lambda")]
    assert len(lambdas) == 143


def test_masked_logits_match_every_exit(masked_results, official_ref):
    assert len(masked_results) == 4
    for result, expected in zip(masked_results, official_ref["logits_masked"]):
        assert result.logits.shape == expected.shape
        assert (result.logits - expected).abs().max().item() < 1e-3


def test_compute_masks_match_per_image(masked_results, official_ref):
    assert masked_results[0].compute_mask is None
    for k, expected in enumerate(official_ref["masks"]):  # mask k drives exit k + 2
        got = masked_results[k + 1].compute_mask
        assert torch.equal(got, expected)
    # the two images really have different masks, so per-image handling is exercised
    assert (official_ref["masks"][0][0] != official_ref["masks"][0][1]).float().mean() > 0.3


def test_compute_fractions_and_per_image_gflops(masked_results, official_ref):
    fractions = torch.tensor(official_ref["compute_fraction"]).reshape(-1, 4)
    per_image = torch.tensor(official_ref["gmac_masked_per_image"]).reshape(-1, 4)
    for k, result in enumerate(masked_results):
        assert torch.allclose(result.computed_fraction, fractions[:, k].double(), atol=1e-6)
        assert torch.allclose(result.gflops, per_image[:, k].double(), rtol=1e-6)


def test_batch_gflops_with_batch_mean_fractions(model, official_ref):
    """The authors' counter on a batch uses p averaged over the batch at each conv resolution."""
    fractions = {}
    for k, key in enumerate(("out1", "out2", "out3"), start=1):
        fractions[k] = {tuple(int(v) for v in size.split("x")): float(m.float().mean())
                        for size, m in official_ref["mask_dicts"][key].items()}
    got = gflops_for_fractions(model.config, (192, 320), fractions)
    assert got == pytest.approx(official_ref["gmac_masked"], rel=1e-6)


def test_dense_run_of_the_same_weights(model, official_ref):
    with torch.no_grad():
        dense = list(model.anytime(official_ref["input"], adaptive=False))
    for result, expected in zip(dense, official_ref["logits_dense"]):
        assert (result.logits - expected).abs().max().item() < 1e-3
        assert result.compute_mask is None
    assert [r.gflops[0].item() for r in dense] == pytest.approx(official_ref["gmac_dense"], rel=1e-9)


def test_precarry_head_outputs_at_computed_positions(model, official_ref, masked_results):
    """Where a position was computed, the carried logits are the head's raw (pre-carry) output."""
    for k, precarry in enumerate(official_ref["logits_masked_precarry"]):
        mask = official_ref["masks"][k].bool().unsqueeze(1).expand_as(precarry)
        got = masked_results[k + 1].logits
        assert (got[mask] - precarry[mask]).abs().max().item() < 1e-3


def test_single_images_give_the_same_masks(model, official_ref, masked_results):
    for b in range(2):
        with torch.no_grad():
            alone = list(model.anytime(official_ref["input"][b:b + 1]))
        for k in range(1, 4):
            assert torch.equal(alone[k].compute_mask[0], masked_results[k].compute_mask[b])
            assert (alone[k].logits[0] - masked_results[k].logits[b]).abs().max().item() < 1e-3


def test_threshold_comes_from_the_override(official_ref):
    """With the default T = 0.998 nearly everything is computed on these weights: masks must differ."""
    model = create_model("adpc_hrnet_w18s_seg", checkpoint=OFFICIAL_REF)
    assert model.config.threshold == 0.998
    with torch.no_grad():
        results = list(model.anytime(official_ref["input"]))
    assert not torch.equal(results[1].compute_mask, official_ref["masks"][0])
    assert (results[1].compute_mask >= official_ref["masks"][0]).all()  # a higher T computes a superset
