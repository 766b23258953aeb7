"""The YOLOv3 loss: box (IoU family on decoded boxes), objectness (BCE on every cell), class (BCE on positives).

    loss = box_weight * mean_pos(b (1 - IoU_kind)) + obj_weight * sum_s w_s * mean_cells_s(BCE_obj) + cls_weight * mean_pos(BCE_cls)
           [+ dfl_weight * mean_pos(b DFL)  with box_bins]

with b = b_s * (1 + g (1 - w h / image area)) per positive, b_s = box_scale_weights of its scale s, g =
box_size_gain (YOLOv3 weighs boxes by 2 - w h: small ones count up to twice), its GT's w h; w_s = obj_scale_weights
of a cell's scale; the objectness target of a positive (1 - r) + r * IoU (r = obj_iou_ratio), of a negative 0.

With box bins (yolo/models/head.py), DFL is the distribution focal loss of GFL (Li et al., NeurIPS 2020): each box
number's target u* in [0, 1] lies between two bins, and their cross-entropies are mixed by how close u* is to each,
so the predicted distribution gathers around the target and its expectation lands on it.

Two details from the YOLOv3 paper: classes use independent sigmoids (BCE, not softmax), and a negative cell whose
predicted box already overlaps some GT by more than `ignore_iou_thres` is left out of the objectness loss -- it
is a reasonable detection of an object some other anchor is responsible for, so it should not be pushed to zero.
"""
import torch
import torch.nn.functional as F

from .assign import assign
from .boxes import cxcywh_to_xyxy, iou_family
from .models.head import box_numbers, decode


class YOLOLoss:
    """average_counts: under DDP, a function that averages a tensor over the processes (all_reduce). The means over
    positives and over cells then divide by the counts of the whole global batch, as DETR divides by the number of
    boxes of all processes: DDP averages the gradients, so each process's sum over that average count makes exactly
    the update of one process on the global batch (tests/test_distributed.py). Gradient accumulation still averages
    the means of its batches: the counts of later batches are not known when an earlier one's backward runs."""

    def __init__(self, cfg, average_counts=None):
        self.cfg = cfg
        self.average_counts = average_counts
        self.generator = torch.Generator().manual_seed(cfg.seed)  # for random conflict resolution

    def __call__(self, outputs, targets, decoding):
        """outputs: list of (B, A, H, W, 5+C) raw; targets: (N, 6); decoding: the model's BoxDecoding (anchors
        (3, A, 2) pixels, strides, reach).

        Returns (scalar loss, dict of detached loss terms, assignment stats).
        """
        cfg = self.cfg
        width = 5 + cfg.num_classes + 4 * decoding.bins
        if outputs[0].shape[-1] != width:
            raise ValueError(f"the loss takes a model's training-mode outputs, (B, A, H, W, {width}) for "
                             f"{cfg.num_classes} classes and box_bins {decoding.bins}; got {tuple(outputs[0].shape)} "
                             f"(an eval-mode model leaves out the box bins)")
        grid_sizes = [o.shape[2:4] for o in outputs]
        anchors = decoding.anchors
        assignments, stats = assign(targets, anchors, grid_sizes, decoding.strides, cfg.label_assignment,
                                    cfg.match_iou_thres, cfg.filter_by_max_iou, cfg.assign_unmatched_to_best,
                                    self.generator)
        device = outputs[0].device
        box_loss, cls_loss, dfl_loss, obj_sums, obj_cells = [], [], [], [], []
        num_classes, bins = cfg.num_classes, decoding.bins
        image_area = float(grid_sizes[0][0] * decoding.strides[0] * grid_sizes[0][1] * decoding.strides[0])
        box_per_scale = {}  # stride -> mean 1 - IoU_kind of that scale's positives (NaN without any), logged only
        for s, (raw, asg) in enumerate(zip(outputs, assignments)):
            reach = decoding.reach_at(grid_sizes[s])
            stride, anchors_wh = decoding.strides[s], anchors[s]
            raw = raw.float()  # losses in fp32 even under autocast
            obj_target = torch.zeros(raw.shape[:4], device=device)
            obj_mask = ignore_mask(raw, anchors_wh, stride, reach, targets, cfg.ignore_iou_thres)
            if len(asg.gt):
                pos = raw[asg.batch, asg.anchor, asg.gy, asg.gx]  # (P, 5 + C), (P, 5 + C + 4 R) with box bins
                cell_xy = torch.stack((asg.gx, asg.gy), 1).float()
                pred_box = decode(pos[:, :4], cell_xy, anchors_wh[asg.anchor], stride, reach)
                iou = iou_family(pred_box, targets[asg.gt, 2:6], cfg.box_loss)
                weight = cfg.box_scale_weights[s] * size_weight(targets[asg.gt, 4:6], image_area, cfg.box_size_gain)
                box_loss.append(weight * (1.0 - iou))
                box_per_scale[f"box_s{stride}"] = (1.0 - iou).detach().mean()
                cls_target = F.one_hot(targets[asg.gt, 1].long(), cfg.num_classes).float()
                cls_loss.append(F.binary_cross_entropy_with_logits(pos[:, 5:5 + num_classes], cls_target,
                                                                   reduction="none").mean(1))
                if bins:
                    wanted = box_numbers(targets[asg.gt, 2:6], cell_xy, anchors_wh[asg.anchor], stride, reach)
                    dfl = distribution_focal_loss(pos[:, 5 + num_classes:], wanted)  # (P,)
                    dfl_loss.append(weight * dfl)
                # objectness learns how well the box fits (YOLOv5's IoU target, mixed with 1 by obj_iou_ratio) so
                # scores rank detections by quality
                fit = iou.detach().clamp(min=0)
                obj_target[asg.batch, asg.anchor, asg.gy, asg.gx] = (1.0 - cfg.obj_iou_ratio + cfg.obj_iou_ratio * fit
                                                                     ).to(obj_target.dtype)
                obj_mask[asg.batch, asg.anchor, asg.gy, asg.gx] = True
            obj_sums.append(F.binary_cross_entropy_with_logits(raw[..., 4], obj_target, weight=obj_mask,
                                                               reduction="sum"))
            obj_cells.append(obj_mask.sum())
        box_terms = torch.cat(box_loss) if box_loss else torch.zeros(0, device=device)  # (P,) one per positive
        cls_terms = torch.cat(cls_loss) if cls_loss else torch.zeros(0, device=device)
        box_sum, cls_sum = box_terms.sum(), cls_terms.sum()
        dfl_sum = torch.cat(dfl_loss).sum() if dfl_loss else torch.zeros((), device=device)
        counts = torch.stack([torch.tensor(float(len(box_terms)), device=device),
                              *[c.float() for c in obj_cells]])   # (1 + scales,) positives, counted cells per scale
        if self.average_counts is not None:
            counts = self.average_counts(counts)
        counts = counts.clamp(min=1e-6)  # no positives: the sums are zero too
        box, cls = box_sum / counts[0], cls_sum / counts[0]
        obj_loss = sum(w * o / c for w, o, c in zip(cfg.obj_scale_weights, obj_sums, counts[1:]))
        loss = cfg.box_weight * box + cfg.obj_weight * obj_loss + cfg.cls_weight * cls
        items = {"box": box.detach(), "obj": obj_loss.detach(), "cls": cls.detach()}
        if bins:
            dfl = dfl_sum / counts[0]
            loss = loss + cfg.dfl_weight * dfl
            items["dfl"] = dfl.detach()
        # the box term per scale shows where box precision is lost (metrics.csv box_s8, box_s16, box_s32)
        items.update({f"box_s{stride}": box_per_scale.get(f"box_s{stride}", torch.tensor(float("nan")))
                      for stride in decoding.strides})
        return loss, items, stats


def size_weight(gt_wh, image_area, gain):
    """(P,) 1 + gain (1 - w h / image area) for GT sizes gt_wh (P, 2) in pixels: 1 for a box that fills the image,
    up to 1 + gain for a tiny one."""
    return 1.0 + gain * (1.0 - gt_wh.prod(1) / image_area)


def distribution_focal_loss(bin_logits, wanted):
    """bin_logits: (P, 4 R) the positives' box bins; wanted: (P, 4) target numbers u* (clipped to [0, 1]).
    Returns (P,): per positive, the mean over its 4 numbers of the cross-entropy with the two bins around u*,
    weighted by closeness (u* on a bin: that bin's cross-entropy alone)."""
    logits = bin_logits.float().unflatten(-1, (4, -1))                    # (P, 4, R)
    bins = logits.shape[-1]
    position = wanted.clamp(0, 1) * (bins - 1)                            # (P, 4) in bin units
    left = position.floor().clamp(max=bins - 2)
    right_weight = position - left                                        # in [0, 1]
    log_probs = logits.log_softmax(-1)
    left_lp = log_probs.gather(-1, left.long().unsqueeze(-1)).squeeze(-1)  # (P, 4)
    right_lp = log_probs.gather(-1, left.long().unsqueeze(-1) + 1).squeeze(-1)
    return -((1 - right_weight) * left_lp + right_weight * right_lp).mean(-1)


@torch.no_grad()
def ignore_mask(raw, anchors_wh, stride, reach, targets, thres):
    """True where a cell counts as a negative: its predicted box overlaps no GT by more than `thres`.

    Comparing every cell with every GT would be the biggest tensor of the loss, but only cells near a GT can
    overlap it: a predicted centre stays within `reach` cells of its cell's centre and a box is less than 4 anchors
    wide. With thres >= 0.5 the window is tighter still: if the centre of box P lies outside box G, their
    intersection is less than half of P, so IoU < 0.5. Each GT is compared with the cells of its window only.
    """
    b, a, h, w, _ = raw.shape
    mask = torch.ones((b, a, h, w), dtype=torch.bool, device=raw.device)
    if thres <= 0 or thres >= 1 or not len(targets):
        return mask
    gt = cxcywh_to_xyxy(targets[:, 2:6])                                      # (K, 4)
    # window of each GT: cells whose centre lies within `margin` pixels of it (floor/ceil: a cell too many is fine)
    margin = reach * stride + (0.0 if thres >= 0.5 else 2 * float(anchors_wh.max()))
    last = torch.tensor([w - 1, h - 1], device=raw.device)
    lo = ((gt[:, :2] - margin) / stride - 0.5).floor().long().clamp(min=0)   # (K, 2) first cell x, y
    hi = torch.minimum(((gt[:, 2:] + margin) / stride - 0.5).ceil().long(), last)
    size = (hi - lo + 1).clamp(min=0)                                         # (K, 2) window width, height
    count = size[:, 0] * size[:, 1]
    k = torch.repeat_interleave(torch.arange(len(gt), device=raw.device), count)  # (M,) the GT of each window cell
    first, width, box = lo[k], size[k, 0], gt[k, None]                       # (M, 2), (M,), (M, 1, 4)
    rank = torch.arange(len(k), device=raw.device) - (torch.cumsum(count, 0) - count)[k]  # position in its window
    gx, gy = first[:, 0] + rank % width, first[:, 1] + rank // width
    image = targets[k, 0].long()
    cell_xy = torch.stack((gx, gy), 1).float()[:, None]                      # (M, 1, 2)
    pred = decode(raw[image, :, gy, gx, :4], cell_xy, anchors_wh, stride, reach)  # (M, A, 4) cx, cy, w, h
    p1, p2 = pred[..., :2] - pred[..., 2:] / 2, pred[..., :2] + pred[..., 2:] / 2
    g1, g2 = box[..., :2], box[..., 2:]                                       # (M, 1, 2)
    overlap = (torch.minimum(p2, g2) - torch.maximum(p1, g1)).clamp_(min=0)  # (M, A, 2)
    inter = overlap[..., 0] * overlap[..., 1]
    # IoU > t  <=>  inter > t * (area_p + area_g - inter)  <=>  inter > t / (1 + t) * (area_p + area_g)
    areas = pred[..., 2] * pred[..., 3] + (g2 - g1).prod(-1)
    cell, anchor = (inter > areas.mul_(thres / (1 + thres))).nonzero(as_tuple=True)
    mask[image[cell], anchor, gy[cell], gx[cell]] = False
    return mask
