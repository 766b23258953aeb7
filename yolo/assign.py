"""Label assignment: which anchors (image, scale, anchor, cell) learn which ground-truth box.

Three IoU-based strategies (config `label_assignment`):

* single_grid -- only the cell that contains the GT centre. Each of its anchors whose *shape* IoU with the GT
  (anchor centred on the GT, as YOLOv3 does) is >= `match_iou_thres` becomes positive.
* nearby_grid -- the same test in the 3x3 neighbourhood of the centre cell (cells outside the grid are dropped, so
  no cell appears twice). More positives per GT, as in YOLOv5's neighbour cells, but selected by IoU.
* all_grid -- every anchor of every cell: IoU between the anchor box placed at its cell centre and the GT; an
  anchor is positive for the GT it overlaps most, if that IoU >= `match_iou_thres`.

When several GTs claim the same anchor, `filter_by_max_iou=True` keeps the GT with the highest IoU (ties: lowest
GT index); `False` keeps one claimant chosen uniformly at random. A GT that no anchor matches on any scale gets its
single best anchor when `assign_unmatched_to_best=True` (YOLOv3's rule), so no object is silently never learned.

Everything is vectorized over images, GTs, anchors and cells; the only Python loop runs over the 3 scales.
Targets are (N, 6) rows of (batch_index, class, cx, cy, w, h) in pixels of the network input.
"""
from dataclasses import dataclass

import torch

from .boxes import cxcywh_to_xyxy, wh_iou
from .config_checks import STRATEGIES


@dataclass
class ScaleAssignment:
    """Positives of one scale, one entry per positive anchor."""
    batch: torch.Tensor   # (P,) image index
    anchor: torch.Tensor  # (P,) anchor index within the scale
    gy: torch.Tensor      # (P,) cell row
    gx: torch.Tensor      # (P,) cell column
    gt: torch.Tensor      # (P,) row of `targets` this anchor learns
    iou: torch.Tensor     # (P,) the IoU that matched them


def centre_cells(targets, stride, grid_hw):
    """Cell (x, y) containing each GT centre, clamped so a centre on the far border stays on the grid."""
    h, w = grid_hw
    cell = (targets[:, 2:4] / stride).floor().long()
    return torch.stack((cell[:, 0].clamp(0, w - 1), cell[:, 1].clamp(0, h - 1)), 1)  # (N, 2) x, y


def anchor_boxes_at_cells(cells_xy, anchors_wh, stride):
    """Anchor boxes (xyxy, pixels) centred on the given cells: (K, 2) x (A, 2) -> (K, A, 4)."""
    centre = (cells_xy.float() + 0.5) * stride                              # (K, 2)
    wh = anchors_wh[None].expand(len(cells_xy), -1, -1)                      # (K, A, 2)
    boxes = torch.cat((centre[:, None].expand_as(wh), wh), -1)               # (K, A, 4) cxcywh
    return cxcywh_to_xyxy(boxes)


def candidates_single(targets, anchors_wh, stride, grid_hw, thres):
    iou = wh_iou(targets[:, 4:6], anchors_wh)                                # (N, A)
    n, a = (iou >= thres).nonzero(as_tuple=True)
    cell = centre_cells(targets, stride, grid_hw)[n]
    return n, a, cell[:, 1], cell[:, 0], iou[n, a]


NEIGHBOURS = torch.tensor([(dx, dy) for dy in (-1, 0, 1) for dx in (-1, 0, 1)])  # (9, 2)


def candidates_nearby(targets, anchors_wh, stride, grid_hw, thres):
    h, w = grid_hw
    iou = wh_iou(targets[:, 4:6], anchors_wh)                                # (N, A)
    cells = centre_cells(targets, stride, grid_hw)[:, None] + NEIGHBOURS.to(targets.device)  # (N, 9, 2)
    inside = (cells[..., 0] >= 0) & (cells[..., 0] < w) & (cells[..., 1] >= 0) & (cells[..., 1] < h)
    n, k, a = (inside[:, :, None] & (iou >= thres)[:, None, :]).nonzero(as_tuple=True)
    cell = cells[n, k]
    return n, a, cell[:, 1], cell[:, 0], iou[n, a]


def candidates_all(targets, anchors_wh, stride, grid_hw, thres):
    h, w = grid_hw
    gt_area = targets[:, 4] * targets[:, 5]
    anchor_area = anchors_wh.prod(1)
    # IoU can never exceed smaller area / larger area: most (GT, anchor) pairs are ruled out before any cell
    ratio = torch.min(gt_area[:, None], anchor_area[None]) / torch.max(gt_area[:, None], anchor_area[None])
    n, a = (ratio >= thres).nonzero(as_tuple=True)                           # (P,) pairs worth a look
    gt_xyxy = cxcywh_to_xyxy(targets[n, 2:6])                                # (P, 4)
    half_wh = anchors_wh[a] / 2                                              # (P, 2)
    centres_x = (torch.arange(w, device=targets.device) + 0.5) * stride      # (W,)
    centres_y = (torch.arange(h, device=targets.device) + 0.5) * stride      # (H,)
    # boxes are axis-aligned, so the overlap is (overlap along x) * (overlap along y): (P, W) and (P, H)
    overlap_x = (torch.min(gt_xyxy[:, 2:3], centres_x + half_wh[:, :1])
                 - torch.max(gt_xyxy[:, 0:1], centres_x - half_wh[:, :1])).clamp(min=0)
    overlap_y = (torch.min(gt_xyxy[:, 3:4], centres_y + half_wh[:, 1:])
                 - torch.max(gt_xyxy[:, 1:2], centres_y - half_wh[:, 1:])).clamp(min=0)
    inter = overlap_y[:, :, None] * overlap_x[:, None, :]                   # (P, H, W)
    iou = inter / (gt_area[n, None, None] + anchor_area[a, None, None] - inter)
    p, gy, gx = (iou >= thres).nonzero(as_tuple=True)
    return n[p], a[p], gy, gx, iou[p, gy, gx]


CANDIDATES = {"single_grid": candidates_single, "nearby_grid": candidates_nearby, "all_grid": candidates_all}


def best_anchor_iou(targets, anchors_wh, stride, grid_hw, strategy):
    """IoU of each GT with each anchor of its centre cell, measured the way `strategy` measures it: (N, A)."""
    if strategy != "all_grid":
        return wh_iou(targets[:, 4:6], anchors_wh)
    anchors = anchor_boxes_at_cells(centre_cells(targets, stride, grid_hw), anchors_wh, stride)  # (N, A, 4)
    gt = cxcywh_to_xyxy(targets[:, 2:6])[:, None].expand_as(anchors)
    lt, rb = torch.max(gt[..., :2], anchors[..., :2]), torch.min(gt[..., 2:], anchors[..., 2:])
    inter = (rb - lt).clamp(min=0).prod(-1)
    area = lambda b: (b[..., 2:] - b[..., :2]).prod(-1)  # noqa: E731
    return inter / (area(gt) + area(anchors) - inter)


def resolve_conflicts(key, priority, gt):
    """Keep, for every distinct key, the candidate with the highest priority (ties: lowest GT index)."""
    _, inverse = torch.unique(key, return_inverse=True)
    num_keys = int(inverse.max()) + 1
    best = priority.new_full((num_keys,), -1.0).scatter_reduce(0, inverse, priority, "amax")
    is_best = priority == best[inverse]
    lowest_gt = gt.new_full((num_keys,), int(gt.max()) + 1).scatter_reduce(0, inverse[is_best], gt[is_best], "amin")
    return is_best & (gt == lowest_gt[inverse])


def assign(targets, anchors, grid_sizes, strides, strategy="nearby_grid", iou_thres=0.3,
           filter_by_max_iou=True, unmatched_to_best=True, generator=None):
    """targets: (N, 6); anchors: (S, A, 2) pixels; grid_sizes: S pairs (H, W); strides: S ints.

    Returns (list of S ScaleAssignment, stats dict of floats).
    """
    if strategy not in CANDIDATES:
        raise ValueError(f"unknown label_assignment {strategy!r}; choose one of {list(STRATEGIES)}")
    num_gt, num_anchors = len(targets), anchors.shape[1]
    per_scale = []
    for s, (grid_hw, stride) in enumerate(zip(grid_sizes, strides)):
        per_scale.append(list(CANDIDATES[strategy](targets, anchors[s], stride, grid_hw, iou_thres)))

    if unmatched_to_best and num_gt:
        add_best_anchor_for_unmatched(per_scale, targets, anchors, grid_sizes, strides, strategy)

    result = []
    for s, (n, a, gy, gx, iou) in enumerate(per_scale):
        h, w = grid_sizes[s]
        key = ((targets[n, 0].long() * num_anchors + a) * h + gy) * w + gx
        if filter_by_max_iou:
            priority = iou
        else:
            priority = torch.rand(len(n), generator=generator).to(iou.device)
        keep = resolve_conflicts(key, priority, n) if len(n) else torch.zeros(0, dtype=torch.bool,
                                                                              device=targets.device)
        result.append(ScaleAssignment(targets[n[keep], 0].long(), a[keep], gy[keep], gx[keep], n[keep], iou[keep]))
    return result, assignment_stats(result, num_gt)


def add_best_anchor_for_unmatched(per_scale, targets, anchors, grid_sizes, strides, strategy):
    """YOLOv3's rule: a GT without any candidate takes the single anchor (any scale) it overlaps most."""
    matched = torch.zeros(len(targets), dtype=torch.bool, device=targets.device)
    for n, *_ in per_scale:
        matched[n] = True
    lonely = (~matched).nonzero(as_tuple=True)[0]
    if not len(lonely):
        return
    lonely_targets = targets[lonely]
    ious = torch.cat([best_anchor_iou(lonely_targets, anchors[s], strides[s], grid_sizes[s], strategy)
                      for s in range(len(strides))], 1)                      # (L, S * A)
    best_iou, best = ious.max(1)
    best_scale, best_anchor = best // anchors.shape[1], best % anchors.shape[1]
    for s in range(len(strides)):
        pick = best_scale == s
        cell = centre_cells(lonely_targets[pick], strides[s], grid_sizes[s])
        extra = (lonely[pick], best_anchor[pick], cell[:, 1], cell[:, 0], best_iou[pick])
        per_scale[s] = [torch.cat((old, new)) for old, new in zip(per_scale[s], extra)]


def assignment_stats(result, num_gt):
    """Positives per GT (mean, min), share of GTs left without any positive, positives per scale."""
    device = result[0].gt.device
    pos_per_gt = torch.zeros(num_gt, device=device)
    for r in result:
        pos_per_gt += torch.bincount(r.gt, minlength=num_gt)[:num_gt]
    stats = {f"pos_s{i}": float(len(r.gt)) for i, r in enumerate(result)}
    if num_gt:
        stats.update(pos_per_gt=pos_per_gt.mean().item(), pos_per_gt_min=pos_per_gt.min().item(),
                     unmatched_pct=100.0 * (pos_per_gt == 0).float().mean().item(), num_gt=float(num_gt))
    else:
        stats.update(pos_per_gt=0.0, pos_per_gt_min=0.0, unmatched_pct=0.0, num_gt=0.0)
    return stats
