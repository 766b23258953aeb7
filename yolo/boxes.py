"""Box formats and the IoU family.

Pairwise IoU and format conversion come from torchvision.ops; the loss needs *element-wise* IoU between matched
pairs, which torchvision offers only inside its loss functions, so `iou_family` computes it here, written out from
the papers (GIoU: Rezatofighi et al. 2019; DIoU and CIoU: Zheng et al. 2020).
"""
import math

import torch
from torchvision.ops import box_convert, box_iou  # noqa: F401  (re-exported: one place to import box ops from)


def cxcywh_to_xyxy(boxes):
    return box_convert(boxes, "cxcywh", "xyxy")


def wh_iou(wh1, wh2):
    """IoU of boxes that share a centre, from their sizes: (N, 2) x (M, 2) -> (N, M).

    YOLOv3 matches anchors to objects by shape alone: both boxes are centred on the same point.
    """
    inter = torch.min(wh1[:, None], wh2[None]).prod(-1)
    return inter / (wh1.prod(-1)[:, None] + wh2.prod(-1)[None] - inter)


def vote_boxes(kept, candidates, iou, scores, iou_thres):
    """Box voting (Gidaris & Komodakis, ICCV 2015), the merge of merge-NMS: each kept box (K, 4) becomes the mean of
    the candidates that overlap it by more than iou_thres (itself included: IoU 1), weighted by score x IoU, so a
    barely overlapping neighbour counts less (YOLOv5's merge weights by the score alone). candidates: (M, 4) shared by
    every kept box, or (K, M, 4) one set each; iou (K, M); scores (M,) or (K, M), 0 for a candidate that does not
    count. A kept box without a counted candidate (zero area, or no score) stays as it is. Plain tensor operators:
    postprocess calls it, and so does the NMS graph of an ONNX export."""
    weights = torch.where((iou > iou_thres) | (iou >= 1.0), iou * scores, torch.zeros_like(iou))
    total = weights.sum(-1, keepdim=True)                                     # (K, 1)
    mean = (weights.unsqueeze(-2) @ candidates).squeeze(-2) / torch.where(total > 0, total, torch.ones_like(total))
    return torch.where(total > 0, mean, kept)


def iou_family(pred, target, kind="ciou", eps=1e-7):
    """Element-wise IoU / GIoU / DIoU / CIoU of matched boxes in (cx, cy, w, h): (..., 4), (..., 4) -> (...).

    The loss is 1 - this value. CIoU = IoU - rho^2/c^2 - alpha * v with
    v = 4/pi^2 (atan(w_gt/h_gt) - atan(w/h))^2 and alpha = v / ((1 - IoU) + v), alpha held constant in the
    backward pass as the CIoU paper prescribes.
    """
    p1, p2 = pred[..., :2] - pred[..., 2:] / 2, pred[..., :2] + pred[..., 2:] / 2
    t1, t2 = target[..., :2] - target[..., 2:] / 2, target[..., :2] + target[..., 2:] / 2
    inter = (torch.min(p2, t2) - torch.max(p1, t1)).clamp(min=0).prod(-1)
    union = pred[..., 2:].prod(-1) + target[..., 2:].prod(-1) - inter
    iou = inter / (union + eps)
    if kind == "iou":
        return iou
    hull_wh = torch.max(p2, t2) - torch.min(p1, t1)  # smallest box enclosing both
    if kind == "giou":
        hull_area = hull_wh.prod(-1) + eps
        return iou - (hull_area - union) / hull_area
    centre_dist2 = (pred[..., :2] - target[..., :2]).pow(2).sum(-1)
    hull_diag2 = hull_wh.pow(2).sum(-1) + eps
    diou = iou - centre_dist2 / hull_diag2
    if kind == "diou":
        return diou
    if kind != "ciou":
        raise ValueError(f"unknown IoU kind {kind!r}; choose iou, giou, diou or ciou")
    v = (4 / math.pi ** 2) * (torch.atan(target[..., 2] / (target[..., 3] + eps))
                              - torch.atan(pred[..., 2] / (pred[..., 3] + eps))).pow(2)
    with torch.no_grad():
        alpha = v / ((1 - iou) + v + eps)
    return diou - alpha * v
