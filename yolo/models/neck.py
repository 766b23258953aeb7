"""The YOLOv3 feature pyramid: top-down path with upsampling and concatenation (Redmon & Farhadi, 2018).

The neck is a numbered list of blocks so multi-task models can share the first blocks and copy the rest
(`neck_groups` reads config `branching`; `YOLONeck` holds one copy of a block per group of tasks):

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


def run_neck(block, c3, c4, c5):
    """Wire the 8 blocks together; block(j, x) runs block j on x. Returns (P3, P4, P5)."""
    x5 = block(0, c5)
    p5 = block(1, x5)
    x4 = block(3, torch.cat([block(2, x5), c4], 1))
    p4 = block(4, x4)
    x3 = block(6, torch.cat([block(5, x4), c3], 1))
    p3 = block(7, x3)
    return p3, p4, p5


# ------------------------------------------------------------------------------------------- multi-task branching
def neck_groups(branching, num_tasks):
    """Which tasks share each neck block, from config `branching`: groups[j] lists the task groups of block j, one
    group per copy of the block. Raises ValueError naming the first entry that breaks the grammar.

    branching = [[layer_index, [[task ids], ...]], ...]: after block `layer_index` each listed group gets its own
    copy of the remaining blocks. The first entry lists every task once; a later entry splits groups further: it
    lists all the tasks of each group it splits, and groups it does not mention stay as they are. -1 splits right
    after the backbone. Example, 3 tasks: [[2, [[2], [0, 1]]], [4, [[0], [1]]]] -> blocks 0-2 shared by all;
    3-4 one copy for task 2 and one for tasks 0 and 1; 5-7 one copy per task (copies in the order [2], [0], [1]).
    """
    everyone = list(range(num_tasks))
    groups = [[everyone] for _ in NECK_BLOCK_NAMES]
    previous_index, previous_groups = -2, [everyone]
    for n, entry in enumerate(branching or []):
        where = f"config field 'branching', entry {n} {entry!r}"
        if (not isinstance(entry, (list, tuple)) or len(entry) != 2 or not isinstance(entry[0], int)
                or not isinstance(entry[1], (list, tuple))
                or not all(isinstance(g, (list, tuple)) and all(isinstance(t, int) for t in g) for g in entry[1])):
            raise ValueError(f"{where}: must be [layer_index, [[task ids], [task ids], ...]]")
        index, split = entry[0], [sorted(g) for g in entry[1]]
        if not -1 <= index <= len(NECK_BLOCK_NAMES) - 2:
            raise ValueError(f"{where}: layer index {index} is out of range; split after a neck layer -1 (right "
                             f"after the backbone) ... {len(NECK_BLOCK_NAMES) - 2} (python main.py --task info lists them)")
        if index <= previous_index:
            raise ValueError(f"{where}: layer indices must increase from one entry to the next")
        listed = [t for g in split for t in g]
        if len(listed) != len(set(listed)) or not set(listed) <= set(everyone):
            raise ValueError(f"{where}: each task id 0..{num_tasks - 1} may appear once, got {sorted(listed)}")
        if any(not group for group in split):
            raise ValueError(f"{where}: an empty group has no task to serve")
        for group in split:
            if not any(set(group) <= set(parent) for parent in previous_groups):
                raise ValueError(f"{where}: group {group} is not inside one group of the previous entries "
                                 f"{previous_groups}: a branch can only split further, never merge")
        groups_now = []
        for parent in previous_groups:  # each group so far is kept as it is, or split completely
            inside = [g for g in split if set(g) <= set(parent)]
            covered = sorted(t for g in inside for t in g)
            if inside and covered != parent:
                raise ValueError(f"{where}: splits group {parent} but leaves out task(s) "
                                 f"{sorted(set(parent) - set(covered))}; list each of its tasks once")
            groups_now += inside or [parent]
        for j in range(index + 1, len(NECK_BLOCK_NAMES)):
            groups[j] = groups_now
        previous_index, previous_groups = index, groups_now
    return groups


class YOLONeck(nn.Module):
    """The 8 blocks, each as a list of copies: one copy per task group of `groups` (neck_groups). A single-task
    model has one copy of each. Copies start as equal clones and then learn their own tasks."""

    def __init__(self, in_channels, width, groups=None):
        super().__init__()
        self.groups = groups or neck_groups(None, 1)
        template = build_neck_blocks(in_channels, width)
        self.blocks = nn.ModuleList(
            nn.ModuleList([template[j]] + [copy.deepcopy(template[j]) for _ in block_groups[1:]])
            for j, block_groups in enumerate(self.groups))
        num_tasks = len(self.groups[0][0])
        # routes[t][j]: which copy of block j task t runs
        self.routes = [[next(c for c, g in enumerate(block_groups) if t in g) for block_groups in self.groups]
                       for t in range(num_tasks)]
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
