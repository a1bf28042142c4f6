"""Fold eval-mode BatchNorm into the preceding convolution (inference only).

`fold_batchnorm(model)` folds BN into every *plain* conv (stem, layer1, exit 1: the parts no mask ever reaches),
which keeps the model's adaptive semantics exact: a masked conv's RBF fill is applied before its BN, so BN cannot be
folded into a `MaskedConv2d` without changing what skipped pixels get (the sparse backend folds those itself, per
unit, with the fill handled correctly). `include_masked=True` folds those too: the model is then only valid for
dense runs (`adaptive=False`); the benchmark uses it as the fair dense baseline (BN folded everywhere, as the sparse
backend folds it). Folded BNs become `nn.Identity`, so state-dict keys change: fold a copy, after loading weights.
"""
from __future__ import annotations

import torch
from torch import nn

from ..blocks import BasicBlock, Bottleneck
from ..masked_conv import MaskedConv2d


def _fold_pair(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> None:
    with torch.no_grad():
        var = bn.running_var.float() + bn.eps
        scale = (bn.weight.float() if bn.affine else torch.ones_like(var)) / torch.sqrt(var)
        shift = (bn.bias.float() if bn.affine else torch.zeros_like(var)) - bn.running_mean.float() * scale
        bias = conv.bias.float() if conv.bias is not None else torch.zeros_like(var)
        conv.weight.copy_((conv.weight.float() * scale[:, None, None, None]).to(conv.weight.dtype))
        new_bias = (bias * scale + shift).to(conv.weight.dtype)
        if conv.bias is None:
            conv.bias = nn.Parameter(new_bias, requires_grad=conv.weight.requires_grad)
        else:
            conv.bias.copy_(new_bias)


def _foldable(conv, bn, include_masked: bool) -> bool:
    return (isinstance(conv, nn.Conv2d) and isinstance(bn, nn.BatchNorm2d) and bn.track_running_stats
            and (include_masked or not isinstance(conv, MaskedConv2d)))


def fold_batchnorm(model: nn.Module, include_masked: bool = False) -> nn.Module:
    """Fold in place (and return) every (conv, BN) pair: consecutive in a Sequential, `convK`/`bnK` in residual
    blocks and at the model's top level (the stem). The model must be in eval mode."""
    if model.training:
        raise ValueError("fold_batchnorm needs a model in eval mode")
    for module in list(model.modules()):
        if isinstance(module, nn.Sequential):
            names = list(module._modules)
            for a, b in zip(names, names[1:]):
                conv, bn = module._modules[a], module._modules[b]
                if _foldable(conv, bn, include_masked):
                    _fold_pair(conv, bn)
                    module._modules[b] = nn.Identity()
        pairs = [("conv1", "bn1"), ("conv2", "bn2"), ("conv3", "bn3")]
        if isinstance(module, (BasicBlock, Bottleneck)) or module is model:
            for c, b in pairs:
                conv, bn = getattr(module, c, None), getattr(module, b, None)
                if _foldable(conv, bn, include_masked):
                    _fold_pair(conv, bn)
                    setattr(module, b, nn.Identity())
    return model
