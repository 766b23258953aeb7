"""From raw head outputs to detections: objectness prefilter -> decode -> score threshold -> per-class NMS -> at
most max_det per image.

At a low threshold (0.005 for mAP) post-processing must not cost much next to the forward pass, so it touches as
little as possible: a score is objectness times a class probability below 1, so only cells whose objectness alone
passes the threshold are decoded (a trained model is sure most cells are empty), and NMS runs once per image, on
its best pre_nms_topk boxes (config field, default PRE_NMS_TOPK). `decode_outputs` keeps the plain every-cell
decoding, for analysis.
"""
import functools
import math

import torch
from torchvision.ops import nms

from .boxes import box_iou, cxcywh_to_xyxy, vote_boxes
from .models.head import decode, decode_boxes, make_grid, reach_in_cells

PRE_NMS_TOPK = 1000  # per image: NMS cost grows with the square of its input; low-score boxes rarely survive it


def decode_outputs(outputs, decoding):
    """Raw outputs of all scales -> (B, N, 4) xyxy boxes in input pixels and (B, N, C) class scores, every cell.
    decoding: the model's BoxDecoding."""
    boxes, scores = [], []
    for raw, anchors_wh, stride in zip(outputs, decoding.anchors, decoding.strides):
        b = raw.shape[0]
        reach = decoding.reach_at(raw.shape[2:4])
        boxes.append(cxcywh_to_xyxy(decode_boxes(raw.float(), anchors_wh, stride, reach)).view(b, -1, 4))
        # YOLOv3 score: P(object) * P(class | object), classes as independent sigmoids
        scores.append((raw[..., 4:5].float().sigmoid() * raw[..., 5:].float().sigmoid()).view(b, -1, raw.shape[-1] - 5))
    return torch.cat(boxes, 1), torch.cat(scores, 1)


def cell_table(outputs, decoding):
    """What decoding needs for each cell of all scales, in the order of decode_candidates' flattened outputs
    (scale, anchor, row, column): (N, 6) = cell x, cell y, anchor w, anchor h, stride, reach. The same for every
    batch of a given input size, so it is built once per size and anchors."""
    grids = tuple(tuple(o.shape[1:4]) for o in outputs)
    return _cell_table(grids, tuple(decoding.anchors.flatten().tolist()), tuple(decoding.strides), decoding.reach,
                       outputs[0].device)


@functools.lru_cache(maxsize=16)
def _cell_table(grids, anchors, strides, reach, device):
    anchors = torch.tensor(anchors, device=device).view(len(grids), -1, 2)
    parts = []
    for (a, h, w), anchors_wh, stride in zip(grids, anchors, strides):
        cell_xy = make_grid(h, w, device)[0].expand(a, h, w, 2)
        anchor_wh = anchors_wh.view(a, 1, 1, 2).expand(a, h, w, 2)
        stride_reach = torch.tensor([float(stride), reach_in_cells(reach, (h, w))], device=device)
        parts.append(torch.cat((cell_xy, anchor_wh, stride_reach.expand(a, h, w, 2)), -1).view(-1, 6))
    return torch.cat(parts)


def decode_candidates(outputs, decoding, conf_thres):
    """Decode only the cells whose objectness alone passes conf_thres (no other cell can reach it).
    Returns boxes (P, 4) xyxy, class scores (P, C) and image index (P,), sorted by image."""
    raw = torch.cat([o.flatten(1, 3) for o in outputs], 1)                   # (B, N, 5 + C), N cells of all scales
    num_cells, width = raw.shape[1:]
    # compare logits, not sigmoids of every cell; the margin keeps every cell whose float sigmoid could pass
    if conf_thres <= 0:
        min_logit = -math.inf
    else:
        min_logit = math.log(conf_thres / (1 - conf_thres)) - 1e-4 if conf_thres < 1 else math.inf
    picked = (raw[..., 4] > min_logit).view(-1).nonzero().squeeze(1)        # (P,) into B * N, sorted by image
    rows = raw.view(-1, width).index_select(0, picked).float()               # (P, 5 + C)
    cell = cell_table(outputs, decoding).index_select(0, picked % num_cells)  # (P, 6)
    boxes = cxcywh_to_xyxy(decode(rows[:, :4], cell[:, 0:2], cell[:, 2:4], cell[:, 4:5], cell[:, 5:6]))
    scores = rows[:, 4:5].sigmoid() * rows[:, 5:].sigmoid()                  # as in decode_outputs
    return boxes, scores, picked // num_cells


@torch.no_grad()
def postprocess(outputs, decoding, conf_thres=0.005, nms_iou=0.5, max_det=100, multi_label=False,
                pre_nms_topk=PRE_NMS_TOPK, capped=None, merge=False):
    """outputs: one model's raw outputs, a list of (B, A, H, W, 5 + C); decoding: that model's BoxDecoding.
    Returns one (boxes (K, 4) xyxy input pixels, scores (K,), labels (K,)) tuple per image, best first.

    multi_label=False keeps each box's best class (what you want to draw); True keeps every (box, class) pair above
    the threshold, so a box whose class is uncertain still counts for the right class -- the usual choice when
    computing mAP (YOLOv5's validation does the same). Boxes of different classes never suppress each other.
    NMS sees at most pre_nms_topk candidates per image. Greedy NMS never lets a lower-scored box suppress a higher
    one, so the cut changes nothing when max_det boxes survive among the top pre_nms_topk: `capped`, a list when
    given, receives (candidate count, best score below the cut) of every image where fewer survived (the cut may
    have dropped a detection, scored at most that).
    merge=True: each kept box becomes the average of the candidates of its class that overlap it by more than
    nms_iou (itself included), weighted by score x IoU (boxes.vote_boxes); its score stays its own.
    """
    boxes, class_scores, image = decode_candidates(outputs, decoding, conf_thres)
    num_classes = class_scores.shape[1]
    if multi_label:                                                          # one entry per (box, class) pair
        all_scores = class_scores.view(-1)
        pair = (all_scores > conf_thres).nonzero().squeeze(1)
        box, labels, scores = pair // num_classes, pair % num_classes, all_scores.index_select(0, pair)
    else:                                                                    # each box's best class
        scores, labels = class_scores.max(1)
        box = (scores > conf_thres).nonzero().squeeze(1)
        scores, labels = scores.index_select(0, box), labels.index_select(0, box)
    boxes, image = boxes.index_select(0, box), image.index_select(0, box)    # still sorted by image
    # one NMS call per image: each class is shifted by more than the extent of all boxes, so boxes of different
    # classes never overlap (in float64, where the shift costs the coordinates no precision). torchvision's
    # batched_nms does the same per call, but computing the shift once for the batch measured 15-20 % faster.
    class_offset = float(boxes.max() - boxes.min()) + 1 if len(boxes) else 0.0
    shifted, scores64 = boxes.double() + labels[:, None] * class_offset, scores.double()
    kept, start = [], 0
    merged = boxes.clone() if merge else boxes
    for count in torch.bincount(image, minlength=outputs[0].shape[0]).tolist():
        candidates = slice(start, start + count)                             # what NMS sees of this image
        if count > pre_nms_topk:
            top_scores, top = scores64[candidates].topk(pre_nms_topk + 1)      # one more: the best one cut
            candidates, best_cut = top[:-1] + start, float(top_scores[-1])
            keep = candidates[nms(shifted[candidates], scores64[candidates], nms_iou)]
            if capped is not None and len(keep) < max_det:
                capped.append((count, best_cut))
        else:
            keep = nms(shifted[candidates], scores64[candidates], nms_iou) + start
        keep = keep[:max_det]                                                # best first
        if merge and len(keep):  # voted in the shifted frame (boxes of two classes never overlap), shifted back
            iou = box_iou(shifted[keep], shifted[candidates]).nan_to_num(0.0)  # a zero-area box: nan -> no overlap
            voted = vote_boxes(shifted[keep], shifted[candidates], iou, scores64[candidates], nms_iou)
            merged[keep] = (voted - labels[keep, None] * class_offset).to(boxes.dtype)
        kept.append(keep)
        start += count
    per_image = [len(k) for k in kept]
    kept = torch.cat(kept)
    return list(zip(merged.index_select(0, kept).split(per_image), scores.index_select(0, kept).split(per_image),
                    labels.index_select(0, kept).split(per_image)))


def split_detections(rows, batch_size, conf_thres=0.0):
    """An end-to-end model's (N, 7) output (image, x1, y1, x2, y2, score, class: yolo/models/onnx_nms.py) as
    postprocess returns detections: one (boxes (K, 4) xyxy input pixels, scores (K,), labels (K,) int64) per image,
    best first. Rows scoring conf_thres or less are dropped: a threshold above the graph's own filters further."""
    rows = rows[rows[:, 5] > conf_thres]
    image = rows[:, 0].long()
    per_image = []
    for index in range(batch_size):
        mine = rows[image == index]
        mine = mine[mine[:, 5].argsort(descending=True, stable=True)]  # the graph sorts them; kept so for any input
        per_image.append((mine[:, 1:5], mine[:, 5], mine[:, 6].long()))
    return per_image
