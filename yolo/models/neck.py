"""The YOLOv3 feature pyramid: top-down path with upsampling and concatenation (Redmon & Farhadi, 2018).

The neck is a numbered list of blocks so multi-task models can share the first blocks and copy the rest
(yolo/branching.py reads config `branching`; `YOLONeck` holds one copy of a block per group of tasks):

    0 top5   5 convs on C5                 -> x5
    1 out5   3x3 conv on x5                 -> P5 (stride 32, to the head)
    2 up5    1x1 conv on x5, upsample x2    -> joins C4
    3 top4   5 convs on [up5, C4]           -> x4
    4 out4   3x3 conv                       -> P4 (stride 16)
    5 up4    1x1 conv, upsample x2          -> joins C3
    6 top3   5 convs on [up4, C3]           -> x3
    7 out3   3x3 conv                       -> P3 (stride 8)
"""
import copy

import torch
from torch import nn

from ..branching import neck_groups, neck_routes
from ..config_checks import ACTIVATIONS as NECK_ACTIVATIONS


# the neck's nonlinearity (config neck_activation): YOLOv3 uses LeakyReLU(0.1); YOLOv5 and later use SiLU
# (x * sigmoid(x), Elfwing et al. 2018), smooth and non-monotonic; ReLU is the cheapest on every runtime
ACTIVATIONS = {"leaky": lambda: nn.LeakyReLU(0.1, inplace=True), "silu": lambda: nn.SiLU(inplace=True),
               "relu": lambda: nn.ReLU(inplace=True)}
assert tuple(ACTIVATIONS) == NECK_ACTIVATIONS  # the names config_checks lets through


def conv_bn_act(c_in, c_out, k=1, s=1, act="leaky"):
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False), nn.BatchNorm2d(c_out), ACTIVATIONS[act]())


def conv_set(c_in, c, act="leaky"):
    """YOLOv3's five alternating 1x1 / 3x3 convolutions: the 1x1s squeeze, the 3x3s see context."""
    return nn.Sequential(conv_bn_act(c_in, c, 1, act=act), conv_bn_act(c, 2 * c, 3, act=act),
                         conv_bn_act(2 * c, c, 1, act=act), conv_bn_act(c, 2 * c, 3, act=act),
                         conv_bn_act(2 * c, c, 1, act=act))


def neck_channels(width):
    """Channels of x3, x4, x5: YOLOv3's 128, 256, 512 scaled by the width multiplier, whatever the backbone.
    (Tried: half the backbone's channels, as light as some YOLO variants' necks. On the shapes benchmark it trained
    1.4x faster per epoch but reached mAP@0.5 0.34 after 3 epochs against 0.52, so the fuller neck stays.)"""
    return tuple(max(8, int(c * width)) for c in (128, 256, 512))


def build_neck_blocks(in_channels, width, act="leaky"):
    """in_channels: backbone (C3, C4, C5) channels; act: a key of ACTIVATIONS. Returns the 8 blocks in the order of
    the table above."""
    c3_in, c4_in, c5_in = in_channels
    n3, n4, n5 = neck_channels(width)
    return nn.ModuleList([
        conv_set(c5_in, n5, act),
        conv_bn_act(n5, 2 * n5, 3, act=act),
        nn.Sequential(conv_bn_act(n5, n4, 1, act=act), nn.Upsample(scale_factor=2, mode="nearest")),
        conv_set(n4 + c4_in, n4, act),
        conv_bn_act(n4, 2 * n4, 3, act=act),
        nn.Sequential(conv_bn_act(n4, n3, 1, act=act), nn.Upsample(scale_factor=2, mode="nearest")),
        conv_set(n3 + c3_in, n3, act),
        conv_bn_act(n3, 2 * n3, 3, act=act),
    ])


def output_channels(width):
    """Channels of P3, P4, P5 (the 3x3 `out` blocks double the conv-set width)."""
    return tuple(2 * c for c in neck_channels(width))


def run_neck(block, c3, c4, c5):
    """Wire the 8 blocks together; block(j, x) runs block j on x. Returns (P3, P4, P5)."""
    x5 = block(0, c5)
    p5 = block(1, x5)
    x4 = block(3, torch.cat([block(2, x5), c4], 1))
    p4 = block(4, x4)
    x3 = block(6, torch.cat([block(5, x4), c3], 1))
    p3 = block(7, x3)
    return p3, p4, p5


class YOLONeck(nn.Module):
    """The 8 blocks, each as a list of copies: one copy per task group of `groups` (neck_groups). A single-task
    model has one copy of each. Copies start as equal clones and then learn their own tasks."""

    def __init__(self, in_channels, width, groups=None, act="leaky"):
        super().__init__()
        self.groups = groups or neck_groups(None, 1)
        template = build_neck_blocks(in_channels, width, act)
        self.blocks = nn.ModuleList(
            nn.ModuleList([template[j]] + [copy.deepcopy(template[j]) for _ in block_groups[1:]])
            for j, block_groups in enumerate(self.groups))
        self.routes = neck_routes(self.groups)  # routes[t][j]: which copy of block j task t runs
        self.out_channels = output_channels(width)

    def forward(self, features, tasks=(0,)):
        """features: backbone (C3, C4, C5). Returns one (P3, P4, P5) per task of `tasks`.

        A block copy shared by several of the tasks runs once: its output is cached under (block, copy). That is
        exact because branches only split: tasks sharing copy c of block j share every block before j too, so
        they feed it the same input."""
        cache = {}

        def path_of(task):
            def block(j, x):
                key = (j, self.routes[task][j])
                if key not in cache:
                    cache[key] = self.blocks[j][key[1]](x)
                return cache[key]
            return block

        return [run_neck(path_of(t), *features) for t in tasks]
