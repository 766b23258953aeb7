"""Every detection head the config can name, built by `build_head`: the plain 1x1 head (yolo/models/head.py), the
hand-made 3x3 tower, and the tower heads of a head search (yolo/models/search_cell.py: the search's mixed cells, a
genotype's fixed cells).

    TowerHead, for each scale s (the towers are shared by the scales):
        p   = proj_s(P_s)                    1x1 conv of the neck output to `channels` (the scales' widths differ)
        box = box_tower(p, p)                objectness + box feature
        cls = cls_tower(box, p)              class feature: the box feature is its first input (state 0) and the
                                             scale's feature its second, in the reference's order (Zhong et al.,
                                             ECCV 2020), so a genotype of its papers means the same cell here
        out = YOLOHead conv_s([P_s, box, cls])  the same 1x1 prediction conv and output layout (B, A, H, W, 5 + C)
                                             as the plain head, so decoding, loss and post-processing are unchanged
The prediction conv also reads P_s itself, and a trained (non-search) tower's last norm starts at zero scale
(zero-init residual, Goyal et al. 2017): a tower head starts as the 1x1 head and its towers add what they learn.
Without the shortcut the towers were a 2 x `channels` bottleneck that short CPU budgets could not train through
(bench/head_search.py: mAP@0.5 0.13 against the 1x1 head's 0.24).
"""
import torch
from torch import nn

from ..config_checks import HEADS
from .head import YOLOHead
from .search_cell import FixedCell, SearchCell, conv_norm, parse_genotype
from .search_ops import unit


class Tower3x3(nn.Module):
    """The hand-made baseline: `depth` std 3x3 units on the scale's feature (the second input: the class tower's
    first one is the box feature, which this tower does not use)."""

    def __init__(self, channels, depth=2):
        super().__init__()
        self.units = nn.Sequential(*(unit("std", channels) for _ in range(depth)))

    def forward(self, s0, s1):
        return self.units(s1)


class TowerHead(nn.Module):
    """Per-scale projection -> box and class towers shared by the scales -> YOLOHead (module docstring)."""

    def __init__(self, in_channels, num_anchors, num_classes, img_size, strides, channels, box_tower, cls_tower,
                 zero_init=True, box_bins=0):
        super().__init__()
        self.proj = nn.ModuleList(conv_norm(c, channels) for c in in_channels)
        self.box_tower, self.cls_tower = box_tower, cls_tower
        self.predict = YOLOHead([c + 2 * channels for c in in_channels], num_anchors, num_classes, img_size, strides,
                                box_bins)
        if zero_init:  # the towers start silent: the head starts as the 1x1 head on P_s
            for tower in (box_tower, cls_tower):
                last_norm = [m for m in tower.modules() if isinstance(m, nn.GroupNorm)][-1]
                nn.init.zeros_(last_norm.weight)
        self.num_anchors, self.num_classes = num_anchors, num_classes

    def forward(self, features):
        tower_features = []
        for proj, x in zip(self.proj, features):
            p = proj(x)
            box = self.box_tower(p, p)
            tower_features.append(torch.cat([x, box, self.cls_tower(box, p)], 1))
        return self.predict(tower_features)

    def architecture_parameters(self):
        """The alphas of search cells (none for other towers)."""
        return [p for name, p in self.named_parameters() if name.endswith("alphas")]


def build_head(kind, in_channels, num_anchors, num_classes, img_size=416, strides=(8, 16, 32), channels=32,
               narrow=16, genotype=None, genotype_source="genotype", box_bins=0):
    """kind: one of config HEADS -- conv1x1 (YOLOHead alone) | tower3x3 | searched (needs the genotype text) -- or
    search (mixed edges: the model --task search_head trains). genotype_source: where the text came from, for errors.
    box_bins: the box numbers as distributions over that many bins (yolo/models/head.py); 0 = plain logits."""
    if kind == "conv1x1":
        return YOLOHead(in_channels, num_anchors, num_classes, img_size, strides, box_bins)
    if kind == "tower3x3":
        towers = Tower3x3(channels), Tower3x3(channels)
    elif kind == "search":
        towers = SearchCell(channels, narrow), SearchCell(channels, narrow)
    elif kind == "searched":
        if not genotype:
            raise ValueError("head 'searched' needs a genotype: set config field 'genotype_file' to the genotype.txt "
                             "of a search (python main.py --task search_head)")
        nodes = parse_genotype(genotype, genotype_source)
        towers = FixedCell(channels, narrow, nodes["box"]), FixedCell(channels, narrow, nodes["cls"])
    else:
        raise ValueError(f"unknown head {kind!r}; choose one of {HEADS + ('search',)}")
    # the search's towers are not silenced: the alphas learn from what the mixed edges contribute, from step one
    return TowerHead(in_channels, num_anchors, num_classes, img_size, strides, channels, *towers,
                     zero_init=kind != "search", box_bins=box_bins)
