"""The YOLOv3 loss: box (IoU family on decoded boxes), objectness (BCE on every cell), class (BCE on positives).

    loss = box_weight * mean_pos(1 - IoU_kind) + obj_weight * sum_s w_s * mean_cells_s(BCE_obj) + cls_weight * mean_pos(BCE_cls)

Two details from the YOLOv3 paper: classes use independent sigmoids (BCE, not softmax), and a negative cell whose
predicted box already overlaps some GT by more than `ignore_iou_thres` is left out of the objectness loss -- it
is a reasonable detection of an object some other anchor is responsible for, so it should not be pushed to zero.
"""
import torch
import torch.nn.functional as F

from .assign import assign
from .boxes import batched_box_iou, cxcywh_to_xyxy, iou_family
from .models.head import center_reach, decode, decode_boxes


class YOLOLoss:
    def __init__(self, cfg):
        self.cfg = cfg
        self.generator = torch.Generator().manual_seed(cfg.seed)  # for random conflict resolution

    def __call__(self, outputs, targets, anchors):
        """outputs: list of (B, A, H, W, 5+C) raw; targets: (N, 6); anchors: (3, A, 2) pixels.

        Returns (scalar loss, dict of detached loss terms, assignment stats).
        """
        cfg = self.cfg
        grid_sizes = [o.shape[2:4] for o in outputs]
        assignments, stats = assign(targets, anchors, grid_sizes, cfg.strides, cfg.label_assignment,
                                    cfg.match_iou_thres, cfg.filter_by_max_iou, cfg.assign_unmatched_to_best,
                                    self.generator)
        gt_xyxy = padded_gt_boxes(targets, outputs[0].shape[0])  # (B, G, 4)
        device = outputs[0].device
        box_loss, cls_loss, obj_loss = [], [], torch.zeros((), device=device)
        for s, (raw, asg) in enumerate(zip(outputs, assignments)):
            reach = center_reach(cfg.label_assignment, grid_sizes[s])
            stride, anchors_wh = cfg.strides[s], anchors[s]
            raw = raw.float()  # losses in fp32 even under autocast
            obj_target = torch.zeros(raw.shape[:4], device=device)
            obj_mask = ignore_mask(raw, anchors_wh, stride, reach, gt_xyxy, cfg.ignore_iou_thres)
            if len(asg.gt):
                pos = raw[asg.batch, asg.anchor, asg.gy, asg.gx]  # (P, 5 + C)
                cell_xy = torch.stack((asg.gx, asg.gy), 1).float()
                pred_box = decode(pos[:, :4], cell_xy, anchors_wh[asg.anchor], stride, reach)
                iou = iou_family(pred_box, targets[asg.gt, 2:6], cfg.box_loss)
                box_loss.append(1.0 - iou)
                cls_target = F.one_hot(targets[asg.gt, 1].long(), cfg.num_classes).float()
                cls_loss.append(F.binary_cross_entropy_with_logits(pos[:, 5:], cls_target, reduction="none").mean(1))
                # objectness learns how well the box fits (YOLOv5's IoU target) so scores rank detections by quality
                obj_target[asg.batch, asg.anchor, asg.gy, asg.gx] = iou.detach().clamp(min=0).to(obj_target.dtype)
                obj_mask[asg.batch, asg.anchor, asg.gy, asg.gx] = True
            bce = F.binary_cross_entropy_with_logits(raw[..., 4], obj_target, reduction="none")
            obj_loss = obj_loss + cfg.obj_scale_weights[s] * (bce * obj_mask).sum() / obj_mask.sum().clamp(min=1)
        box = torch.cat(box_loss).mean() if box_loss else torch.zeros((), device=device)
        cls = torch.cat(cls_loss).mean() if cls_loss else torch.zeros((), device=device)
        loss = cfg.box_weight * box + cfg.obj_weight * obj_loss + cfg.cls_weight * cls
        items = {"box": box.detach(), "obj": obj_loss.detach(), "cls": cls.detach()}
        return loss, items, stats


def padded_gt_boxes(targets, batch_size):
    """GT boxes per image, padded with empty boxes: (B, G, 4) xyxy, G = most GTs in one image (at least 1)."""
    order = torch.argsort(targets[:, 0], stable=True)
    b = targets[order, 0].long()
    counts = torch.bincount(b, minlength=batch_size)
    g = max(int(counts.max()) if len(b) else 0, 1)
    slot = torch.arange(len(b), device=targets.device) - (torch.cumsum(counts, 0) - counts)[b]  # rank in image
    boxes = torch.zeros(batch_size, g, 4, device=targets.device)
    boxes[b, slot] = cxcywh_to_xyxy(targets[order, 2:6])
    return boxes


@torch.no_grad()
def ignore_mask(raw, anchors_wh, stride, reach, gt_xyxy, thres):
    """True where a cell counts as a negative: its predicted box overlaps no GT by more than `thres`."""
    if thres <= 0 or thres >= 1:
        return torch.ones(raw.shape[:4], dtype=torch.bool, device=raw.device)
    b, a, h, w, _ = raw.shape
    boxes = cxcywh_to_xyxy(decode_boxes(raw, anchors_wh, stride, reach)).view(b, -1, 4)
    best = batched_box_iou(boxes, gt_xyxy).amax(2)  # (B, A*H*W)
    return (best <= thres).view(b, a, h, w)
