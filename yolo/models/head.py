"""Anchor heads and decoding.

Output layout, used everywhere in the project: one tensor per scale of shape (B, A, H, W, 5 + C), the last axis
ordered (tx, ty, tw, th, objectness, class_0 ... class_C-1), all raw logits.

Decoding (pixels at the network input):
    centre = (cell + 0.5 + (2 * sigmoid(txy) - 1) * reach) * stride
    size   = anchor * (2 * sigmoid(twh)) ** 2
The reach fits the label assignment: an anchor must be able to point at every GT it may be assigned to.
`single_grid` assigns only the centre cell, so reach = 0.5 keeps the centre inside the cell (YOLOv3's
cell + sigmoid); `nearby_grid` assigns the 3x3 neighbourhood, so reach = 1.5 gives offsets in (-1, 2) cells;
`all_grid` may assign any cell, so its reach is the whole grid; config `decode_reach` may widen a model's reach
beyond its assignment's (the farthest positives then need no u near the sigmoid's flat ends). The size uses
YOLOv5's bounded form instead of YOLOv3's exp: it is never negative, never explodes, and reaches (0, 4) x anchor.

Distribution-style box regression (`box_bins` R > 0, as the DFL of GFL / YOLOv8 (Li et al., NeurIPS 2020) does
for its distances): each of the four numbers u = sigmoid(t) above is predicted as a distribution over R bins
evenly spaced on [0, 1], u = sum_i softmax(logits)_i * i / (R - 1), so the head says how sure it is of each side
and the loss can push the probability mass towards the target's two neighbouring bins. The head then returns
t = logit(u) in place of tx ... th, so decoding, post-processing and export are those of the plain head; in
training mode it appends the 4 R bin logits after the classes, (B, A, H, W, 5 + C + 4 R), for the loss.
"""
import math
from dataclasses import dataclass

import torch
from torch import nn

from ..config_checks import REACH  # the reach of each label assignment (config decode_reach may widen it)

BIN_EPS = 1e-6  # a box bins' expectation u stays inside (0, 1) so that its logit is finite


def model_reach(cfg):
    """The reach a model of this config decodes with: its decode_reach, else its label assignment's."""
    return REACH[cfg.label_assignment] if cfg.decode_reach is None else float(cfg.decode_reach)


@dataclass
class BoxDecoding:
    """What turns a model's raw outputs into boxes. The model carries it (`model.decoding`), so the loss,
    post-processing, evaluation and export ask the model rather than the config."""
    anchors: torch.Tensor   # (S, A, 2) anchor w, h in pixels at the network input, one row per scale
    strides: tuple          # (8, 16, 32): input pixels per cell of each scale
    reach: float | None     # cells from the cell centre: REACH of its label assignment, or its decode_reach
    bins: int = 0           # box_bins: R bins per box number (training outputs carry 4 R bin logits last); 0 = off

    def reach_at(self, grid_hw):
        return reach_in_cells(self.reach, grid_hw)


def reach_in_cells(reach, grid_hw):
    """How far (in cells, from the cell centre) a predicted centre may move on a grid of grid_hw cells."""
    return float(max(grid_hw)) if reach is None else reach


class YOLOHead(nn.Module):
    """One 1x1 convolution per scale predicting A * (5 + C) numbers per cell (A * (4 R + 1 + C) with box_bins R)."""

    def __init__(self, in_channels, num_anchors, num_classes, img_size=416, strides=(8, 16, 32), box_bins=0):
        super().__init__()
        self.num_anchors, self.num_classes, self.box_bins = num_anchors, num_classes, box_bins
        self.box_channels = 4 * box_bins if box_bins else 4  # conv channels per anchor before the objectness
        self.convs = nn.ModuleList(nn.Conv2d(c, num_anchors * (self.box_channels + 1 + num_classes), 1)
                                   for c in in_channels)
        for conv, stride in zip(self.convs, strides):
            self._init_bias(conv, stride, img_size)
        if box_bins:  # the value of each bin; a buffer so it follows the model's device and dtype
            self.register_buffer("bin_values", torch.linspace(0, 1, box_bins), persistent=False)

    def _init_bias(self, conv, stride, img_size):
        # Start from the prior "few objects, classes equally likely" rather than 50 %: the objectness loss of
        # thousands of empty cells would otherwise swamp the first iterations (RetinaNet's prior-bias trick).
        bias = conv.bias.detach().view(self.num_anchors, -1)
        bias[:, self.box_channels] = math.log(8 / (img_size / stride) ** 2)
        bias[:, self.box_channels + 1:] = math.log(0.6 / max(self.num_classes - 0.99, 1))
        conv.bias.data = bias.view(-1)

    def forward(self, features):
        outputs = []
        for conv, x in zip(self.convs, features):
            b, _, h, w = x.shape
            y = conv(x).view(b, self.num_anchors, self.box_channels + 1 + self.num_classes, h, w)
            y = y.permute(0, 1, 3, 4, 2).contiguous()  # (B, A, H, W, 5 + C), or (B, A, H, W, 4 R + 1 + C)
            outputs.append(self._from_bins(y) if self.box_bins else y)
        return outputs

    def _from_bins(self, y):
        """(B, A, H, W, 4 R + 1 + C) -> (B, A, H, W, 5 + C) with t = logit(expected u) first; in training mode the
        4 R bin logits follow the classes (module docstring)."""
        bins = y[..., :self.box_channels]                                       # (B, A, H, W, 4 R)
        # in float32 even under fp16 autocast: 1 - BIN_EPS would round to 1 in fp16 and its logit to infinity
        u = expected_bins(bins.float(), self.bin_values.float())               # (B, A, H, W, 4) in [0, 1]
        u = u.clamp(BIN_EPS, 1 - BIN_EPS)
        t = (torch.log(u) - torch.log1p(-u)).to(y.dtype)  # logit written out: one formula for torch and ONNX
        rest = y[..., self.box_channels:]                                       # (B, A, H, W, 1 + C)
        return torch.cat((t, rest, bins) if self.training else (t, rest), -1)


def expected_bins(bin_logits, bin_values):
    """(..., 4 R) bin logits -> (..., 4) expected values: softmax over each number's R bins times the bin values."""
    # reshape from the tensor's own sizes, not unflatten: a traced unflatten fixes the batch size in an ONNX graph
    probs = bin_logits.reshape(*bin_logits.shape[:-1], 4, len(bin_values)).softmax(-1)  # (..., 4, R)
    return (probs * bin_values).sum(-1)  # not a matmul: autocast would run that in fp16


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
    return torch.logit(box_numbers(box, cell_xy, anchor_wh, stride, reach), eps=eps)


def box_numbers(box, cell_xy, anchor_wh, stride, reach):
    """The numbers u = sigmoid(t) (..., 4) that `decode` turns into box (..., 4) = cx, cy, w, h in pixels: in
    [0, 1] for boxes decode can reach, outside for others (callers clip). The targets of the box bins' loss."""
    offset = (box[..., :2] / stride - cell_xy - 0.5) / reach  # = 2 sigmoid(txy) - 1, in (-1, 1)
    return torch.cat(((offset + 1) / 2, (box[..., 2:4] / anchor_wh).sqrt() / 2), -1)  # size = anchor (2 u_wh)^2
