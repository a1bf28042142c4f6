"""Confidence-adaptivity semantics on small hand-made cases: each test breaks if one detail of the method does."""
import math

import pytest
import torch
from torch import nn

from anytime_perception import create_model
from anytime_perception.models.confidence import HeatmapPeak, MaxProbability, NegativeEntropy, RandomMask, TopRatio
from anytime_perception.models.masked_conv import EmulatedExecution, MaskedConv2d
from anytime_perception.models.masks import ComputeMask


def logits_with_confidence(conf: torch.Tensor, num_classes: int = 4) -> torch.Tensor:
    """Logits (1, K, h, w) whose max softmax probability is exactly `conf` (float64)."""
    rest = (1 - conf) / (num_classes - 1)
    probs = torch.stack([conf] + [rest] * (num_classes - 1), dim=0).unsqueeze(0)
    return probs.log()


def test_threshold_direction_equal_means_compute():
    conf = torch.tensor([[0.5, 0.998, 0.9990]], dtype=torch.float64)
    confidence, compute, labels = MaxProbability(0.998)(logits_with_confidence(conf))
    assert labels.tolist() == [[[0, 0, 0]]]
    assert torch.allclose(confidence, conf)
    # mask = confidence <= threshold -> compute; only the strictly more confident pixel is skipped
    assert compute.tolist() == [[[True, True, False]]]


def test_heatmap_peak_below_threshold_is_confident():
    heat = torch.zeros(1, 16, 1, 3)
    heat[0, 3, 0] = torch.tensor([0.001, 0.002, 0.5])
    _, compute, labels = HeatmapPeak(0.002)(heat)
    assert compute.tolist() == [[[False, True, True]]] and labels is None


def test_negative_entropy_and_top_ratio_and_random():
    conf = torch.tensor([[0.3, 0.6, 0.9, 0.99]], dtype=torch.float64)
    logits = logits_with_confidence(conf)
    negent, compute, _ = NegativeEntropy(-0.1)(logits)
    assert negent.max() <= 0 and compute[0, 0].tolist() == [True, True, True, False]
    _, top, _ = TopRatio(0.5)(logits)  # the two most confident are skipped, whatever their value
    assert top[0, 0].tolist() == [True, True, False, False]
    big = torch.zeros(2, 4, 32, 32)
    a = RandomMask(0.25, seed=7)(big)[1]
    b = RandomMask(0.25, seed=7)(big)[1]
    assert torch.equal(a, b) and 0.15 < a.float().mean() < 0.35
    assert not torch.equal(a[0], a[1])  # per image


def test_nearest_resize_takes_top_left_of_each_block():
    base = torch.zeros(1, 1, 4, 4)
    base[0, 0, 0, 0] = 1  # top-left of block (0, 0)
    base[0, 0, 1, 3] = 1  # bottom-right of block (0, 1): must be ignored
    mask = ComputeMask(base, EmulatedExecution())
    assert mask.at(2, 2)[0, 0].tolist() == [[1, 0], [0, 0]]
    assert mask.at(1, 1)[0, 0].tolist() == [[1]]
    assert mask.fraction(2, 2).tolist() == [0.25]


def masked_identity_conv(channels: int = 1, lam: float = 3.0) -> MaskedConv2d:
    conv = MaskedConv2d(channels, channels, 1, bias=True)
    with torch.no_grad():
        conv.weight.copy_(torch.eye(channels).reshape(channels, channels, 1, 1))
        conv.bias.fill_(0.5)
        conv.Lambda.fill_(lam)
    return conv


def test_rbf_fill_formula_centre_excluded_full_kernel_normaliser():
    conv = masked_identity_conv(lam=1.0)
    x = torch.arange(81, dtype=torch.float32).reshape(1, 1, 9, 9)
    base = torch.ones(1, 1, 9, 9)
    base[0, 0, 4, 4] = 0  # skip the centre pixel only
    base[0, 0, 4, 5] = 0  # and its right neighbour
    out = conv(x, ComputeMask(base, EmulatedExecution()))
    y = x + 0.5  # bias is included before masking
    d2 = torch.tensor([[(i - 3) ** 2 + (j - 3) ** 2 for j in range(7)] for i in range(7)], dtype=torch.float32)
    k = torch.exp(-d2)
    k[3, 3] = 0
    k = k / (k.sum() + 1e-5)
    patch = (y * base)[0, 0, 1:8, 2:9]  # 7x7 around (4, 5); the skipped neighbours count as 0
    expected = (patch * k).sum()
    assert out[0, 0, 4, 5].item() == pytest.approx(expected.item(), rel=1e-5)
    assert torch.equal(out[0, 0, 0], y[0, 0, 0])  # computed positions untouched


def test_rbf_normaliser_dominates_for_lambda_near_four():
    conv = masked_identity_conv(lam=4.0)
    x = torch.ones(1, 1, 9, 9)
    base = torch.ones(1, 1, 9, 9)
    base[0, 0, 4, 4] = 0
    out = conv(x, ComputeMask(base, EmulatedExecution()))
    # 4 neighbours at d=1 weigh exp(-16) each; the +1e-5 in the normaliser shrinks the fill far below 1.5
    w = math.exp(-16)
    expected = 1.5 * 4 * w / (4 * w + 4 * math.exp(-32) + 1e-5)
    assert out[0, 0, 4, 4].item() == pytest.approx(expected, rel=1e-3)
    assert out[0, 0, 4, 4].item() < 1.5 / 15


@pytest.fixture(scope="module")
def w18s():
    torch.manual_seed(3)
    model = create_model("adpc_hrnet_w18s_seg", conf_threshold=0.9)
    for m in model.modules():  # non-trivial weights so masks are mixed
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=1.2 / math.sqrt(m.weight[0].numel()))
        if isinstance(m, nn.BatchNorm2d):
            m.running_var.uniform_(0.5, 1.5)
    with torch.no_grad():  # peaky classifiers, so some pixels pass the threshold at every exit
        for i, scale in enumerate((40.0, 10.0, 0.7, 1.0), start=1):
            model.exit_head(i)[-1].weight.mul_(scale)
    return model.eval()


def test_carry_over_and_nested_masks(w18s):
    x = torch.randn(2, 3, 96, 160)
    with torch.no_grad():
        results = list(w18s.anytime(x))
    assert [r.index for r in results] == [1, 2, 3, 4]
    for r in results:  # class ids come from the confidence's max: the logits' argmax wherever there is no tie
        top2 = r.logits.topk(2, dim=1).values
        clear = (top2[:, 0] - top2[:, 1]) > 1e-4
        assert torch.equal(r.labels[clear], r.logits.argmax(dim=1)[clear])
    for prev, cur in zip(results, results[1:]):
        skipped = (cur.compute_mask == 0).unsqueeze(1).expand_as(cur.logits)
        assert skipped.any() and (~skipped).any(), "need a mixed mask to test carry-over"
        assert torch.equal(cur.logits[skipped], prev.logits[skipped])  # Eq. 4, bit for bit
    masks = [r.compute_mask for r in results[1:]]
    for earlier, later in zip(masks, masks[1:]):
        assert (later <= earlier).all()  # the computed set only shrinks


def test_masked_layers_are_exactly_those_after_exit1(w18s):
    before = ["conv1", "conv2", "layer1", "exit1"]
    for name, m in w18s.named_modules():
        if isinstance(m, nn.Conv2d) and name.split(".")[0] in before:
            assert not isinstance(m, MaskedConv2d), name
        elif isinstance(m, nn.Conv2d):
            assert isinstance(m, MaskedConv2d), name
            assert m.Lambda.item() == 3.0 and m.Lambda.requires_grad


def test_any_input_size_pads_inside_and_never_computes_padding(w18s):
    x = torch.randn(1, 3, 100, 150)
    with torch.no_grad():
        results = list(w18s.anytime(x))
        padded = torch.nn.functional.pad(x, (0, 10, 0, 28))
        first_padded = next(iter(w18s.anytime(padded)))
    for r in results:
        assert r.logits.shape[-2:] == (25, 38)
        assert r.confidence.shape[-2:] == (25, 38)
    assert torch.allclose(results[0].logits, first_padded.logits[..., :25, :38])
    state = w18s.begin(x)
    while state.exits_done < 2:
        w18s.advance(state)
    assert state.mask.base[..., 25:, :].sum() == 0 and state.mask.base[..., :, 38:].sum() == 0


def test_staged_execution_interleaves_suspends_and_drops(w18s):
    a, b = torch.randn(1, 3, 64, 96), torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        ref_a, ref_b = list(w18s.anytime(a)), list(w18s.anytime(b))
        sa, sb = w18s.begin(a), w18s.begin(b)
        got_a, got_b = [], []
        assert w18s.step_names[:4] == ["stem", "layer1", "exit1", "transition1"]
        while not (sa.finished and sb.finished):
            for s, out in ((sa, got_a), (sb, got_b)):
                if not s.finished:
                    r = w18s.advance(s)
                    if r is not None:
                        out.append(r)
        sc = w18s.begin(a)
        for _ in range(5):
            w18s.advance(sc)
        sc.drop()
    assert sc.finished and sc.features is None
    with pytest.raises(RuntimeError):
        w18s.advance(sc)
    for got, ref in ((got_a, ref_a), (got_b, ref_b)):
        assert len(got) == 4
        for g, r in zip(got, ref):
            assert torch.equal(g.logits, r.logits)


def test_call_returns_list_of_exit_logits_and_trains_through_carry_over():
    torch.manual_seed(0)
    model = create_model("adpc_hrnet_w18s_seg", conf_threshold=0.2).train()
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.normal_(m.weight, std=1.0 / math.sqrt(m.weight[0].numel()))
    outs = model(torch.randn(2, 3, 64, 64))
    assert isinstance(outs, list) and len(outs) == 4 and all(o.shape == (2, 19, 16, 16) for o in outs)
    sum(o.square().mean() for o in outs).backward()
    lambdas = [m.Lambda.grad for m in model.modules() if isinstance(m, MaskedConv2d)]
    assert all(g is not None for g in lambdas) and any(g.abs().sum() > 0 for g in lambdas)
    assert model.exit1[-1].weight.grad.abs().sum() > 0


def test_baseline_has_one_exit_and_pose_heatmaps():
    seg = create_model("hrnet_w18s_seg")
    with torch.no_grad():
        results = list(seg.anytime(torch.randn(1, 3, 64, 64)))
    assert len(results) == 1 and results[0].index == 1 and results[0].is_final
    pose = create_model("adpc_hrnet_w32_pose")
    with torch.no_grad():
        outs = pose(torch.randn(1, 3, 64, 64))
    assert len(outs) == 4 and outs[-1].shape == (1, 16, 16, 16)
    assert pose.config.criterion_name == "heatmap_peak" and pose.config.threshold == 0.002


def test_bad_inputs_and_overrides_give_clear_errors():
    model = create_model("rh_hrnet_w18s_seg")
    with pytest.raises(ValueError, match="shape"):
        model.begin(torch.randn(3, 64, 64))
    with pytest.raises(ValueError, match="empty"):
        model.begin(torch.randn(1, 3, 0, 64))
    with pytest.raises(ValueError, match="unknown model"):
        create_model("adpc_hrnet_w99_seg")
    with pytest.raises(ValueError, match="unknown override"):
        create_model("rh_hrnet_w18s_seg", colour="red")
    with pytest.raises(ValueError, match="threshold"):
        create_model("adpc_hrnet_w18s_seg", conf_threshold=1.5)
    with pytest.raises(ValueError, match="execution"):
        create_model("adpc_hrnet_w18s_seg", execution="warp")
    assert create_model("rh_hrnet_w18s_seg", num_classes=5)(torch.randn(1, 3, 32, 32))[0].shape[1] == 5


def test_calibrated_untrained_weights_hit_their_confident_shares():
    from anytime_perception.models.untrained import calibrate_untrained

    images = torch.randn(2, 3, 96, 128)
    model = create_model("adpc_hrnet_w18s_seg")
    reached = calibrate_untrained(model, images, (0.2, 0.4, 0.6), seed=5)
    assert reached == pytest.approx([0.2, 0.4, 0.6], abs=0.02)
    with torch.no_grad():
        fractions = [r.computed_fraction.mean().item() for r in model.anytime(images)]
    assert fractions[1:] == pytest.approx([0.8, 0.6, 0.4], abs=0.02)
    again = create_model("adpc_hrnet_w18s_seg")
    calibrate_untrained(again, images, (0.2, 0.4, 0.6), seed=5)
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), again.state_dict().values()))
