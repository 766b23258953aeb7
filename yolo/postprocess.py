"""From raw head outputs to detections: decode -> score threshold -> per-class NMS -> at most max_det per image."""
import torch
from torchvision.ops import batched_nms

from .boxes import cxcywh_to_xyxy
from .models.head import center_reach, decode_boxes

PRE_NMS_TOPK = 1000  # per image: NMS cost grows with the square of its input, low-score boxes never survive anyway


def decode_outputs(outputs, anchors, strides, label_assignment):
    """Raw outputs of all scales -> (B, N, 4) xyxy boxes in input pixels and (B, N, C) class scores."""
    boxes, scores = [], []
    for raw, anchors_wh, stride in zip(outputs, anchors, strides):
        b = raw.shape[0]
        reach = center_reach(label_assignment, raw.shape[2:4])
        boxes.append(cxcywh_to_xyxy(decode_boxes(raw.float(), anchors_wh, stride, reach)).view(b, -1, 4))
        # YOLOv3 score: P(object) * P(class | object), classes as independent sigmoids
        scores.append((raw[..., 4:5].float().sigmoid() * raw[..., 5:].float().sigmoid()).view(b, -1, raw.shape[-1] - 5))
    return torch.cat(boxes, 1), torch.cat(scores, 1)


@torch.no_grad()
def postprocess(outputs, anchors, strides, label_assignment, conf_thres=0.005, nms_iou=0.5, max_det=100,
                multi_label=False):
    """Returns one (boxes (K, 4) xyxy input pixels, scores (K,), labels (K,)) tuple per image, best first.

    multi_label=False keeps each box's best class (what you want to draw); True keeps every (box, class) pair above
    the threshold, so a box whose class is uncertain still counts for the right class -- the usual choice when
    computing mAP (YOLOv5's validation does the same). One `batched_nms` call serves the whole batch: boxes of
    different images or classes never suppress each other.
    """
    boxes, class_scores = decode_outputs(outputs, anchors, strides, label_assignment)
    bsz, num_boxes, num_classes = class_scores.shape
    if multi_label:
        scores = class_scores.reshape(bsz, -1)                               # (B, N * C): one entry per pair
    else:
        scores, labels = class_scores.max(2)                                 # (B, N): best class per box
    k = min(PRE_NMS_TOPK, scores.shape[1])
    scores, top = scores.topk(k, dim=1)                                      # (B, k)
    if multi_label:
        top, labels = top // num_classes, top % num_classes
    else:
        labels = labels.gather(1, top)
    boxes = boxes.gather(1, top[..., None].expand(-1, -1, 4))
    image = torch.arange(bsz, device=boxes.device)[:, None].expand(-1, k)
    keep = scores > conf_thres
    boxes, scores, labels, image = boxes[keep], scores[keep], labels[keep], image[keep]
    kept = batched_nms(boxes, scores, image * num_classes + labels, nms_iou)  # sorted by score
    results = []
    for i in range(bsz):  # split per image; the NMS itself was one call
        mine = kept[image[kept] == i][:max_det]
        results.append((boxes[mine], scores[mine], labels[mine]))
    return results
