"""The detector with its post-processing inside the graph (`--task export --export_nms true`): decoding, the score
threshold, a cap on candidates and per-class NMS as ONNX operators (NMS is ONNX's NonMaxSuppression), so the file
alone turns images into detections:

    input    images              (B, 3, H, W) uint8 RGB 0..255, letterboxed, as for the plain export
    outputs  task<k>_detections  (N, 7) float32 per task k, one row per detection of the whole batch:
                                 image index, x1, y1, x2, y2, score, class
                                 boxes in network-input pixels (the letterboxed image: undo the letterbox for the
                                 original image's); each image's rows together, best first, at most max_det each

It computes what yolo/postprocess.py's postprocess(multi_label=True) computes, the evaluation's post-processing,
with the thresholds fixed at export: every (box, class) pair whose score sigmoid(objectness) * sigmoid(class) is
above conf_thres, the best pre_nms_topk pairs of each image, greedy NMS per class at nms_iou, the best max_det of
each image, and with nms_merge each kept box replaced by the score x IoU weighted mean of the candidates of its class
overlapping it by more than nms_iou (merge-NMS). A box can come out under two classes when both pass the threshold.
"""
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.ops import nms

from ..boxes import box_convert, cxcywh_to_xyxy, iou_family, vote_boxes
from .head import decode, make_grid

DETECTION_COLUMNS = ("image", "x1", "y1", "x2", "y2", "score", "class")
NMS_SETTINGS = ("conf_thres", "nms_iou", "max_det", "pre_nms_topk")  # fixed at export, in the metadata's "nms"


def detection_output_names(num_tasks):
    return [f"task{k}_detections" for k in range(num_tasks)]


class NonMaxSuppression(torch.autograd.Function):
    """ONNX's NonMaxSuppression: boxes (B, N, 4), scores (B, C, N) -> selected (K, 3) int64 rows (image, class, box
    index): per image and class, the boxes scoring above score_threshold that greedy NMS keeps, best first, at most
    max_per_class. forward computes it with torchvision, so that tracing runs; the export writes the operator."""

    @staticmethod
    def forward(ctx, boxes, scores, max_per_class, iou_threshold, score_threshold):
        selected = [torch.zeros(0, 3, dtype=torch.int64, device=boxes.device)]
        for image in range(scores.shape[0]):
            for cls in range(scores.shape[1]):
                candidates = (scores[image, cls] > score_threshold).nonzero().squeeze(1)
                keep = nms(boxes[image, candidates], scores[image, cls, candidates], float(iou_threshold))
                keep = candidates[keep[:int(max_per_class)]]
                selected.append(torch.stack([torch.full_like(keep, image), torch.full_like(keep, cls), keep], 1))
        return torch.cat(selected)

    @staticmethod
    def symbolic(g, boxes, scores, max_per_class, iou_threshold, score_threshold):
        return g.op("NonMaxSuppression", boxes, scores, max_per_class, iou_threshold, score_threshold)


def decode_every_cell(outputs, decoding):
    """Raw outputs of all scales -> (B, N, 4) xyxy boxes in input pixels and (B, C, N) scores, every cell. Sizes are
    read from the tensors, never fixed: a graph traced from it follows the input's height and width."""
    boxes, scores = [], []
    for raw, anchors_wh, stride in zip(outputs, decoding.anchors, decoding.strides):
        b, a, h, w, width = raw.shape
        # reach None (all_grid): the grid's largest side, taken from the shape so that it stays dynamic in the graph
        reach = decoding.reach if decoding.reach is not None else torch._shape_as_tensor(raw)[2:4].max().float()
        xywh = decode(raw[..., :4], make_grid(h, w, raw.device), anchors_wh.view(1, a, 1, 1, 2), stride, reach)
        boxes.append(cxcywh_to_xyxy(xywh).reshape(b, -1, 4))
        scores.append((raw[..., 4:5].sigmoid() * raw[..., 5:].sigmoid()).reshape(b, -1, width - 5))
    return torch.cat(boxes, 1), torch.cat(scores, 1).transpose(1, 2)


def keep_best_pairs(scores, k):
    """scores (B, C, N) with all but each image's k best (box, class) pairs set to 0, so NMS sees at most k
    candidates per image, as postprocess's pre_nms_topk (pairs tied with the k-th are all kept)."""
    flat = scores.reshape(scores.shape[0], -1)
    # padded with k zeros: an image with fewer than k pairs has a k-th best of 0 and keeps all of them
    kth = F.pad(flat, (0, k)).topk(k, dim=1).values[:, -1:]
    return torch.where(flat >= kth, flat, torch.zeros_like(flat)).reshape(scores.shape)


class EndToEndDetector(nn.Module):
    """images -> one (N, 7) detection tensor per task (module docstring), for export."""

    def __init__(self, detector, conf_thres, nms_iou, max_det, pre_nms_topk, nms_merge=False):
        super().__init__()
        self.detector = detector
        self.conf_thres, self.nms_iou, self.max_det, self.pre_nms_topk = conf_thres, nms_iou, max_det, pre_nms_topk
        self.nms_merge = nms_merge

    def forward(self, images):
        decoding = self.detector.decoding
        return tuple(self.detections(*decode_every_cell(outputs, decoding))
                     for outputs in self.detector(images, task=None))

    def detections(self, boxes, scores):
        num_images, num_classes, num_boxes = scores.shape
        scores = keep_best_pairs(scores, self.pre_nms_topk)
        selected = NonMaxSuppression.apply(boxes, scores, torch.tensor([self.max_det]),
                                           torch.tensor([self.nms_iou], dtype=torch.float32),
                                           torch.tensor([self.conf_thres], dtype=torch.float32))
        image, cls, box = selected[:, 0], selected[:, 1], selected[:, 2]
        score = scores.reshape(-1)[(image * num_classes + cls) * num_boxes + box]
        xyxy = boxes.reshape(-1, 4)[image * num_boxes + box]
        # image by image, best first; in float64, where the image number leaves the score all its digits
        order = torch.argsort(image.double() * 2 - score.double())
        image, cls, score, xyxy = image[order], cls[order], score[order], xyxy[order]
        # each row's rank within its image: its position minus where its image's rows start
        counts = (image[:, None] == torch.arange(num_images)[None, :]).sum(0)
        rank = torch.arange(image.shape[0]) - (counts.cumsum(0) - counts)[image]
        kept = rank < self.max_det
        image, cls, score, xyxy = image[kept], cls[kept], score[kept], xyxy[kept]
        if self.nms_merge:
            xyxy = self.merged(xyxy, image, cls, boxes, scores)
        return torch.cat([image[:, None].float(), xyxy, score[:, None], cls[:, None].float()], 1)

    def merged(self, kept, image, cls, boxes, scores):
        """postprocess's merge (yolo/boxes.py vote_boxes) on each detection's own candidates. kept (K, 4): the
        detections' boxes, of images `image` and classes `cls` (K,); boxes (B, N, 4) and scores (B, C, N) as
        keep_best_pairs left them. The candidates of a detection: its image's best pre_nms_topk (box, class) pairs of
        its class above conf_thres, what its NMS saw; (K, pre_nms_topk) comparisons, not every cell."""
        num_boxes, k = boxes.shape[1], self.pre_nms_topk
        # padded as in keep_best_pairs: fewer than k pairs leaves zero scores, whose class index is out of range
        top_scores, top = F.pad(scores.reshape(scores.shape[0], -1), (0, k)).topk(k, dim=1)  # (B, k)
        top_boxes = boxes.gather(1, (top % num_boxes)[..., None].expand(-1, -1, 4))       # (B, k, 4)
        candidates = top_boxes.index_select(0, image)                                       # (K, k, 4)
        candidate_scores = top_scores.index_select(0, image)                                # (K, k)
        counted = ((top // num_boxes).index_select(0, image) == cls[:, None]) & (candidate_scores > self.conf_thres)
        iou = iou_family(box_convert(kept[:, None], "xyxy", "cxcywh"), box_convert(candidates, "xyxy", "cxcywh"),
                         "iou")                                                             # (K, k)
        return vote_boxes(kept, candidates, iou, torch.where(counted, candidate_scores, torch.zeros_like(iou)),
                          self.nms_iou)
