"""Anchor heads and decoding.

Output layout, used everywhere in the project: one tensor per scale of shape (B, A, H, W, 5 + C), the last axis
ordered (tx, ty, tw, th, objectness, class_0 ... class_C-1), all raw logits.

Decoding (pixels at the network input):
    centre = (cell + 0.5 + (2 * sigmoid(txy) - 1) * reach) * stride
    size   = anchor * (2 * sigmoid(twh)) ** 2
The reach fits the label assignment: an anchor must be able to point at every GT it may be assigned to.
`single_grid` assigns only the centre cell, so reach = 0.5 keeps the centre inside the cell (YOLOv3's
cell + sigmoid); `nearby_grid` assigns the 3x3 neighbourhood, so reach = 1.5 gives offsets in (-1, 2) cells;
`all_grid` may assign any cell, so its reach is the whole grid. The size uses YOLOv5's bounded form instead of
YOLOv3's exp: it is never negative, never explodes, and reaches (0, 4) x anchor.
"""
import math
from dataclasses import dataclass

import torch
from torch import nn

# reach of each label assignment, in cells from the cell centre; None = anywhere on the grid (its largest side)
REACH = {"single_grid": 0.5, "nearby_grid": 1.5, "all_grid": None}


@dataclass
class BoxDecoding:
    """What turns a model's raw outputs into boxes. The model carries it (`model.decoding`), so the loss,
    post-processing, evaluation and export ask the model rather than the config."""
    anchors: torch.Tensor   # (S, A, 2) anchor w, h in pixels at the network input, one row per scale
    strides: tuple          # (8, 16, 32): input pixels per cell of each scale
    reach: float | None     # REACH of the label assignment the model was trained with

    def reach_at(self, grid_hw):
        return reach_in_cells(self.reach, grid_hw)


def reach_in_cells(reach, grid_hw):
    """How far (in cells, from the cell centre) a predicted centre may move on a grid of grid_hw cells."""
    return float(max(grid_hw)) if reach is None else reach


class YOLOHead(nn.Module):
    """One 1x1 convolution per scale predicting A * (5 + C) numbers per cell."""

    def __init__(self, in_channels, num_anchors, num_classes, img_size=416, strides=(8, 16, 32)):
        super().__init__()
        self.num_anchors, self.num_classes = num_anchors, num_classes
        self.convs = nn.ModuleList(nn.Conv2d(c, num_anchors * (5 + num_classes), 1) for c in in_channels)
        for conv, stride in zip(self.convs, strides):
            self._init_bias(conv, stride, img_size)

    def _init_bias(self, conv, stride, img_size):
        # Start from the prior "few objects, classes equally likely" rather than 50 %: the objectness loss of
        # thousands of empty cells would otherwise swamp the first iterations (RetinaNet's prior-bias trick).
        bias = conv.bias.detach().view(self.num_anchors, -1)
        bias[:, 4] = math.log(8 / (img_size / stride) ** 2)
        bias[:, 5:] = math.log(0.6 / max(self.num_classes - 0.99, 1))
        conv.bias.data = bias.view(-1)

    def forward(self, features):
        outputs = []
        for conv, x in zip(self.convs, features):
            b, _, h, w = x.shape
            y = conv(x).view(b, self.num_anchors, 5 + self.num_classes, h, w)
            outputs.append(y.permute(0, 1, 3, 4, 2).contiguous())  # (B, A, H, W, 5 + C)
        return outputs


def make_grid(h, w, device):
    """Cell coordinates (x, y) of shape (1, 1, H, W, 2)."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device), indexing="ij")
    return torch.stack((xs, ys), -1).view(1, 1, h, w, 2).float()


def decode_boxes(raw, anchors_wh, stride, reach):
    """raw: (B, A, H, W, >=4) logits; anchors_wh: (A, 2) pixels. Returns (B, A, H, W, 4) cx, cy, w, h in pixels."""
    _, a, h, w, _ = raw.shape
    return decode(raw[..., :4], make_grid(h, w, raw.device), anchors_wh.view(1, a, 1, 1, 2), stride, reach)


def decode(txywh, cell_xy, anchor_wh, stride, reach):
    """The decoding formula of the module docstring, for any broadcastable shapes (..., 4), (..., 2), (..., 2)."""
    xy = (cell_xy + 0.5 + (2 * txywh[..., :2].sigmoid() - 1) * reach) * stride
    wh = anchor_wh * (2 * txywh[..., 2:4].sigmoid()) ** 2
    return torch.cat((xy, wh), -1)


def encode(box, cell_xy, anchor_wh, stride, reach, eps=1e-6):
    """The inverse of `decode`: the logits (..., 4) that decode to box (..., 4) = cx, cy, w, h in pixels, the
    formula solved for t. Only boxes decode can reach have exact logits: a centre within `reach` cells of the cell
    centre and a size below 4x the anchor; the logits of others are clipped at logit(eps) and logit(1 - eps).
    Training never needs it; analysis does (a "perfect" prediction to perturb, the logits a GT would need)."""
    offset = (box[..., :2] / stride - cell_xy - 0.5) / reach  # = 2 sigmoid(txy) - 1, in (-1, 1)
    txy = torch.logit((offset + 1) / 2, eps=eps)
    twh = torch.logit((box[..., 2:4] / anchor_wh).sqrt() / 2, eps=eps)  # size = anchor * (2 sigmoid(twh))^2
    return torch.cat((txy, twh), -1)
