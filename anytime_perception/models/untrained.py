"""Untrained weights whose confidence masks behave like a trained model's, for demos and benchmarks.

No trained checkpoint ships with the package yet. A freshly initialised HRNet (weights N(0, 0.001)) predicts a
near-uniform distribution everywhere, so nothing is ever confident and confidence adaptivity never engages. This
module draws non-trivial random weights and then scales each exit's classifier so that, on given images, the share
of confident pixels after exits 1..3 hits chosen targets (default: the paper's computed fractions 0.82 / 0.63 /
0.38 for HRNet-W48 ADP-C, i.e. 18 / 37 / 62 % confident). Labels from such a model mean nothing; its masks, compute
fractions, timings and FLOPs are realistic. Deterministic for a given seed and images.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from .anytime import AnytimeHRNet
from .hrnet import concat_at_quarter
from .masked_conv import call

PAPER_CONFIDENT_SHARES = (0.18, 0.37, 0.62)  # 1 - (0.82, 0.63, 0.38)


def randomise_weights(model: AnytimeHRNet, seed: int = 0) -> None:
    """Conv weights N(0, (g / sqrt(fan_in))^2), g = 0.8 in the backbone and 1.6 in exit heads; BN statistics drawn
    around identity, so activations neither vanish nor explode through the depth of the network."""
    gen = torch.Generator().manual_seed(seed)
    heads = {"exit1", "exit2", "exit3", "last_layer", "final_layer"}
    with torch.no_grad():
        for name, m in model.named_modules():
            if isinstance(m, nn.Conv2d):
                gain = 1.6 if name.split(".")[0] in heads else 0.8
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=gen) * gain / math.sqrt(fan_in))
                if m.bias is not None:
                    m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
            elif isinstance(m, nn.BatchNorm2d):
                m.weight.copy_(torch.rand(m.weight.shape, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.bias.shape, generator=gen) * 0.1)
                m.running_mean.copy_(torch.randn(m.running_mean.shape, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.running_var.shape, generator=gen) + 0.5)


@torch.no_grad()
def calibrate_untrained(model: AnytimeHRNet, images: Tensor, confident_shares=PAPER_CONFIDENT_SHARES,
                        seed: int = 0, tolerance: float = 0.01) -> list[float]:
    """Randomise `model` and scale exits 1..3's classifiers to hit `confident_shares` on `images`.

    Returns the share reached after each exit. The classifier of exit k becomes s_k * W with its bias centring the
    class scores on the computed pixels (plus a small random offset per class), and s_k is found by bisection on
    log s_k; the criterion is the model's own (threshold included).
    """
    if not model.config.confidence_adaptive:
        raise ValueError("calibration needs a confidence-adaptive (adpc_*) model")
    if len(confident_shares) != model.num_exits - 1:
        raise ValueError(f"give {model.num_exits - 1} confident shares, got {len(confident_shares)}")
    randomise_weights(model, seed)
    model.eval()
    gen = torch.Generator().manual_seed(seed + 1)
    state = model.begin(images)
    reached = []
    for index, target in enumerate(confident_shares, start=1):
        while model.steps[state.next_step].name != f"exit{index}":
            model.advance(state)
        head = model.exit_head(index)
        mask = state.mask
        features = call(head[:-1], concat_at_quarter(state.features), mask)
        classifier = model.exit_classifier(index)
        weight = classifier.weight.clone()
        beta = torch.randn(classifier.out_channels, generator=gen) * 0.5
        computed = mask.base if mask is not None else torch.ones_like(features[:, :1])
        mean_in = (features * computed).sum(dim=(0, 2, 3)) / computed.sum().clamp(min=1)
        centre = weight.flatten(1) @ mean_in

        def share_at(log_scale: float) -> float:
            s = math.exp(log_scale)
            classifier.weight.copy_(weight * s)
            classifier.bias.copy_(beta - s * centre)
            raw = call(classifier, features, mask)
            logits = raw if mask is None else state.logits * (1 - mask.base) + raw * mask.base
            h, w = state.output_size
            compute = model.criterion(logits[..., :h, :w]).compute
            return 1.0 - compute.float().mean().item()

        lo, hi = math.log(1e-2), math.log(1e4)
        for _ in range(40):
            mid = (lo + hi) / 2
            got = share_at(mid)
            if abs(got - target) <= tolerance:
                break
            lo, hi = (mid, hi) if got < target else (lo, mid)
        share_at(mid)
        model.advance(state)  # run the calibrated exit for real, making the mask the next exit is computed under
        reached.append(1.0 - float(state.mask.base[..., :state.output_size[0], :state.output_size[1]].mean()))
    return reached


__all__ = ["randomise_weights", "calibrate_untrained", "PAPER_CONFIDENT_SHARES"]
