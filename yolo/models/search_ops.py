"""The candidate operations of the head search, shared per family (RepShare), and the mixed edge.

Candidates, ten plus `none` (the op names of OPS):
    std_*   "standard" unit: full 3x3 conv + norm + ReLU
    sep_*   "separable" unit: depthwise 3x3 + pointwise 1x1 + norm + ReLU
    *_x1, *_x2, *_x3        one, two or three stacked units
    *_x1_dil, *_x2_dil      a dilated (rate 2) separable 3x3 unit after the first or second unit
    none                    zeros: the edge may switch itself off

Representation sharing (the FAD / RepShare idea of Zhong et al., "Representation Sharing for Fast Object Detector
Search and Beyond", ECCV 2020): the five candidates of a family are prefixes of ONE chain of three units, so a
family costs three units plus two dilated branches instead of 1 + 2 + 3 + 2 + 3 = 11 units:

    x -> unit1 -> unit2 -> unit3 -> x3
           |        |-> dil2 ----------> x2_dil
           |        '-> decouple2 1x1 -> x2
           |-> dil1 ----------> x1_dil
           '-> decouple1 1x1 -> x1

As in the reference's RepShare, the outputs that deeper units build on (unit1's and unit2's) reach their own
candidates through a 1x1 "decouple" conv each: x1 and x2 can then differ from what the deeper candidates read,
instead of one tensor serving two purposes. A searched (fixed) edge is the stand-alone `StackedOp` of the same
layout, so a chain's outputs equal stand-alone ops with the same weights (tested). (The reference's stand-alone
ops drop the decouple conv; ours keep it, so a chain's weights can be copied into them.)

The reference names its candidates std_conv_3x3, std_conv_3x3+dil_conv_3x3, std_conv_3x3_x2, ... and
sinSep_conv_3x3 ... for the separable family; REFERENCE_OPS maps them to these.

A mixed edge outputs sum_k softmax(alpha)_k * op_k(x) (DARTS, Liu et al., ICLR 2019); the cell owns the alphas.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

FAMILIES = ("std", "sep")
DEPTHS = (("x1", 1, False), ("x2", 2, False), ("x3", 3, False), ("x1_dil", 1, True), ("x2_dil", 2, True))
# every candidate an edge mixes, in the order of the alphas' last axis: none first, then each family's five
OPS = ("none",) + tuple(f"{family}_{name}" for family in FAMILIES for name, _, _ in DEPTHS)


def norm(channels):
    """GroupNorm, not BatchNorm: the head is shared by the three scales, whose statistics differ; a per-image norm
    behaves the same in training and evaluation whatever scale it sees (as FCOS's shared heads do)."""
    return nn.GroupNorm(math.gcd(channels, 8), channels)


def unit(family, channels, dilation=1):
    """One std or sep unit, channels -> channels, spatial size kept."""
    pad = dilation
    if family == "std":
        convs = [nn.Conv2d(channels, channels, 3, 1, pad, dilation, bias=False)]
    elif family == "sep":
        convs = [nn.Conv2d(channels, channels, 3, 1, pad, dilation, groups=channels, bias=False),
                 nn.Conv2d(channels, channels, 1, bias=False)]
    else:
        raise ValueError(f"unknown op family {family!r}; choose one of {FAMILIES}")
    return nn.Sequential(*convs, norm(channels), nn.ReLU(inplace=True))


def dilated_unit(channels):
    return unit("sep", channels, dilation=2)


def parse_op(name):
    """'std_x2_dil' -> ('std', 2, True). Raises ValueError naming the op for anything else than OPS minus none."""
    if name not in OPS or name == "none":
        raise ValueError(f"unknown op {name!r}; choose one of {', '.join(OPS[1:])}")
    family, rest = name.split("_", 1)
    depth, dilated = next((d, dil) for n, d, dil in DEPTHS if n == rest)
    return family, depth, dilated


def reference_name(name):
    """The reference's name of a candidate: std_x1 -> std_conv_3x3, sep_x2_dil -> sinSep_conv_3x3_x2+dil_conv_3x3."""
    family, depth, dilated = parse_op(name)
    stacked = "" if depth == 1 else f"_x{depth}"
    return f"{'std' if family == 'std' else 'sinSep'}_conv_3x3{stacked}{'+dil_conv_3x3' if dilated else ''}"


REFERENCE_OPS = {reference_name(name): name for name in OPS[1:]}  # the reference's names -> ours


class StackedOp(nn.Module):
    """One candidate on its own (a searched cell's fixed edge): `depth` units, then the decouple 1x1 (x1, x2) or
    the dilated unit (the _dil candidates). Submodule names match RepShare's, so its weights can be copied in."""

    def __init__(self, name, channels):
        super().__init__()
        family, depth, dilated = parse_op(name)
        self.name = name
        self.units = nn.ModuleList(unit(family, channels) for _ in range(depth))
        self.decouple = nn.Conv2d(channels, channels, 1, bias=False) if depth < 3 and not dilated else None
        self.dil = dilated_unit(channels) if dilated else None

    def forward(self, x):
        for u in self.units:
            x = u(x)
        if self.decouple is not None:
            x = self.decouple(x)
        return self.dil(x) if self.dil is not None else x


class RepShare(nn.Module):
    """The five candidates of one family from one chain of three units (module docstring)."""

    def __init__(self, family, channels):
        super().__init__()
        self.family = family
        self.units = nn.ModuleList(unit(family, channels) for _ in range(3))
        self.decouple1 = nn.Conv2d(channels, channels, 1, bias=False)
        self.decouple2 = nn.Conv2d(channels, channels, 1, bias=False)
        self.dil1, self.dil2 = dilated_unit(channels), dilated_unit(channels)

    def forward(self, x):
        """Returns the candidates in DEPTHS order: [x1, x2, x3, x1_dil, x2_dil], each (B, C, H, W)."""
        return self.candidates(x, lambda name, y: self.get_submodule(name)(y))

    @staticmethod
    def candidates(x, run):
        """The chain's wiring; run(name, y) applies the submodule `name` ("units.0", "decouple1", ...) to y, here or,
        for several chains at once, to their stacked channels (fused_forward)."""
        y1 = run("units.0", x)
        y2 = run("units.1", y1)
        y3 = run("units.2", y2)
        return [run("decouple1", y1), run("decouple2", y2), y3, run("dil1", y1), run("dil2", y2)]

    def stand_alone_state(self, name):
        """The state dict of StackedOp(name) holding this chain's weights for that candidate."""
        _, depth, dilated = parse_op(name)
        state = {}
        for key, value in self.state_dict().items():
            part, _, rest = key.partition(".")
            if part == "units" and int(rest.split(".")[0]) < depth:
                state[key] = value
            elif part == f"decouple{depth}" and not dilated:
                state[f"decouple.{rest}"] = value
            elif part == f"dil{depth}" and dilated:
                state[f"dil.{rest}"] = value
        return state


class MixedEdge(nn.Module):
    """sum_k weights_k * op_k(x) over OPS; `none` adds nothing (its weight still counts in the softmax)."""

    def __init__(self, channels):
        super().__init__()
        self.families = nn.ModuleList(RepShare(family, channels) for family in FAMILIES)

    def forward(self, x, weights):
        """x: (B, C, H, W); weights: (len(OPS),), e.g. softmax(alpha) of this edge."""
        candidates = [y for family in self.families for y in family(x)]  # OPS[1:] order
        out = torch.zeros_like(x) * weights[0]  # the `none` op (and keeps the graph when all else is zero)
        for w, y in zip(weights[1:], candidates):
            out = out + w * y
        return out


def fused_forward(modules, x, shared_input=False):
    """k modules of one layout (Sequential, Conv2d, GroupNorm, ReLU) run as one k times wider module, exactly as k
    separate calls (tested): x (B, k c_in, H, W), module i's input on the i-th block of channels, -> (B, k c_out, H, W)
    likewise; with shared_input, x (B, c_in, H, W) is every module's input (a dense conv first). A conv of g groups
    becomes one of k g groups, a GroupNorm of G groups one of k G: no group spans two modules. The modules must be
    built alike (the first one's stride, padding, dilation and eps serve all; norms affine), as the edges of a cell
    are. Why: a search cell's convs are tiny, and a CPU spends more on each call than on its arithmetic."""
    first = modules[0]
    if isinstance(first, nn.Sequential):
        for i in range(len(first)):
            x = fused_forward([m[i] for m in modules], x, shared_input and i == 0)
        return x
    if isinstance(first, nn.Conv2d):
        if shared_input and first.groups != 1:
            raise ValueError("a shared input needs a dense first conv (groups 1)")
        bias = None if first.bias is None else torch.cat([m.bias for m in modules])
        groups = first.groups * (1 if shared_input else len(modules))
        return F.conv2d(x, torch.cat([m.weight for m in modules]), bias, first.stride, first.padding, first.dilation,
                        groups)
    if isinstance(first, nn.GroupNorm):
        return F.group_norm(x, first.num_groups * len(modules), torch.cat([m.weight for m in modules]),
                            torch.cat([m.bias for m in modules]), first.eps)
    if isinstance(first, nn.ReLU):
        return F.relu(x, inplace=first.inplace)
    raise TypeError(f"fused_forward does not know {type(first).__name__}")


def fixed_op(name, channels):
    """The op a genotype names, with fresh weights: StackedOp, or zeros for none."""
    return Zero() if name == "none" else StackedOp(name, channels)


class Zero(nn.Module):
    def forward(self, x):
        return torch.zeros_like(x)
