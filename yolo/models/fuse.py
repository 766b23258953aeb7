"""Fold every BatchNorm into the convolution before it, for inference (export, fast predict).

In eval mode a BatchNorm is a fixed per-channel affine map, so conv followed by BN is one conv with rescaled
weights and a bias:

    BN(conv(x)) = gamma * (W * x + b - mean) / sqrt(var + eps) + beta = W' * x + b'
    W' = W * s,   b' = (b - mean) * s + beta,   s = gamma / sqrt(var + eps)   (per output channel)

One pass over the feature map instead of two, and no BN kernel launches. The pairs are found from the data flow,
not from module names: one forward with hooks records which conv produced the tensor each BN reads. This finds
the pairs of every backbone here (Sequential conv-BN-act blocks, torchvision's ResNet blocks with conv1/bn1,
MobileNetV3's Conv2dNormActivation) without a list of layouts. It assumes the conv's output feeds only its BN,
true of every block in this project; export checks the fused outputs against the unfused ones anyway.
"""
import copy

import torch
from torch import nn
from torch.nn.utils import fuse_conv_bn_weights


@torch.no_grad()
def fuse_batchnorm(model, *example_args, **example_kwargs):
    """A copy of `model` in eval mode with every BatchNorm2d folded into its conv and replaced by nn.Identity.
    example_args / example_kwargs: one forward call's arguments that runs every BN (e.g. images, task=None).
    The original model is left untouched. Raises ValueError for a BN not fed directly by a conv."""
    fused = copy.deepcopy(model).eval()
    pairs = conv_bn_pairs(fused, example_args, example_kwargs)
    for conv_name, bn_name in pairs:
        fold_into_conv(fused.get_submodule(conv_name), fused.get_submodule(bn_name))
        parent, _, child = bn_name.rpartition(".")
        setattr(fused.get_submodule(parent), child, nn.Identity())
    return fused


def conv_bn_pairs(model, example_args, example_kwargs):
    """[(conv name, BN name)] for every BatchNorm2d, from one forward: the BN's input is the conv's output tensor."""
    produced_by, pairs, hooks = {}, [], []
    names = {m: name for name, m in model.named_modules()}

    def after_conv(module, inputs, output):
        produced_by[id(output)] = (names[module], output)  # the tensor is kept so its id is not reused

    def before_bn(module, inputs):
        source = produced_by.get(id(inputs[0]))
        if source is None:
            raise ValueError(f"cannot fuse {names[module]}: its input does not come straight from a Conv2d")
        pairs.append((source[0], names[module]))

    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_hook(after_conv))
        elif isinstance(module, nn.BatchNorm2d):
            hooks.append(module.register_forward_pre_hook(before_bn))
    try:
        model(*example_args, **example_kwargs)
    finally:
        for hook in hooks:
            hook.remove()
    all_bns = {names[m] for m in model.modules() if isinstance(m, nn.BatchNorm2d)}
    missing = all_bns - {bn for _, bn in pairs}
    if missing:
        raise ValueError(f"the example forward did not run {len(missing)} BatchNorm layers (e.g. {min(missing)}); "
                         f"pass inputs that run every branch (for a detector: task=None)")
    if len({conv for conv, _ in pairs}) != len(pairs) or len({bn for _, bn in pairs}) != len(pairs):
        raise ValueError("a conv or BatchNorm runs more than once in the example forward: cannot fold it once")
    return pairs


def fold_into_conv(conv, bn):
    """conv <- BN(conv), in place (formulas in the module docstring; torch's fuse_conv_bn_weights computes them).
    The weight keeps its memory format."""
    conv.weight, conv.bias = fuse_conv_bn_weights(conv.weight, conv.bias, bn.running_mean, bn.running_var, bn.eps,
                                                  bn.weight, bn.bias)
