import pytest
import torch
from torchvision.ops import batched_nms

import yolo.postprocess as pp
from yolo.models.head import REACH, BoxDecoding
from yolo.postprocess import decode_outputs, postprocess


def decoding(anchors, label_assignment):
    return BoxDecoding(anchors, (8, 16, 32), REACH[label_assignment])


def logit(p):
    p = torch.as_tensor(p)
    return torch.log(p / (1 - p))


def test_decode_threshold_nms_and_max_det():
    anchors = torch.tensor([[[16.0, 16.0]], [[32.0, 32.0]], [[64.0, 64.0]]])  # (3 scales, 1 anchor, 2)
    num_classes = 2
    outputs = [torch.full((2, 1, 64 // s, 64 // s, 5 + num_classes), -20.0) for s in (8, 16, 32)]
    for o in outputs:
        o[..., :4] = 0.0  # zero offsets: the anchor centred on its cell
    # image 0: two neighbouring stride-8 cells predict nearly the same box of class 1 -> NMS keeps the better one
    outputs[0][0, 0, 2, 2, 4], outputs[0][0, 0, 2, 2, 6] = logit(0.9), logit(0.9)
    outputs[0][0, 0, 2, 3, 4], outputs[0][0, 0, 2, 3, 6] = logit(0.8), logit(0.9)
    # image 1: the same box but class 0 in a different image: must survive (NMS never crosses images)
    outputs[0][1, 0, 2, 2, 4], outputs[0][1, 0, 2, 2, 5] = logit(0.7), logit(0.99)
    results = postprocess(outputs, decoding(anchors, "single_grid"), conf_thres=0.1, nms_iou=0.3, max_det=10)
    boxes0, scores0, labels0 = results[0]
    assert len(boxes0) == 1 and labels0.item() == 1
    assert torch.allclose(scores0, torch.tensor([0.81]), atol=1e-4)
    assert torch.allclose(boxes0[0], torch.tensor([20.0 - 8, 20 - 8, 20 + 8, 20 + 8]), atol=1e-3)
    boxes1, scores1, labels1 = results[1]
    assert len(boxes1) == 1 and labels1.item() == 0 and abs(scores1.item() - 0.693) < 1e-3


def test_max_det_keeps_the_best():
    anchors = torch.tensor([[[8.0, 8.0]], [[16.0, 16.0]], [[32.0, 32.0]]])
    outputs = [torch.zeros(1, 1, 64 // s, 64 // s, 6) for s in (8, 16, 32)]
    outputs[0][..., 4] = torch.linspace(-3, 3, 64).view(1, 1, 8, 8)  # 64 disjoint boxes, increasing score
    outputs[0][..., 5] = 10.0
    outputs[1][..., 4] = outputs[2][..., 4] = -20.0
    boxes, scores, _ = postprocess(outputs, decoding(anchors, "single_grid"), 0.01, 0.5, max_det=5)[0]
    assert len(scores) == 5 and torch.all(scores[:-1] >= scores[1:])
    assert abs(scores[0].item() - torch.sigmoid(torch.tensor(3.0)).item()) < 1e-4


def test_multi_label_keeps_each_class_above_threshold():
    anchors = torch.tensor([[[16.0, 16.0]], [[32.0, 32.0]], [[64.0, 64.0]]])
    outputs = [torch.full((1, 1, 64 // s, 64 // s, 5 + 3), -20.0) for s in (8, 16, 32)]
    outputs[0][0, 0, 3, 3, :4] = 0.0
    outputs[0][0, 0, 3, 3, 4] = 20.0                      # surely an object
    outputs[0][0, 0, 3, 3, 5:] = logit(torch.tensor([0.6, 0.3, 0.01]))  # unsure between classes 0 and 1
    single = postprocess(outputs, decoding(anchors, "single_grid"), 0.05, 0.5, 10)[0]
    multi = postprocess(outputs, decoding(anchors, "single_grid"), 0.05, 0.5, 10, multi_label=True)[0]
    assert single[2].tolist() == [0]
    assert multi[2].tolist() == [0, 1] and torch.allclose(multi[1], torch.tensor([0.6, 0.3]), atol=1e-4)
    assert torch.equal(multi[0][0], multi[0][1])  # the same box, once per class


# ---- the objectness prefilter: postprocess decodes only cells whose objectness passes conf_thres; it must give
# exactly what thresholding every decoded box gives (the plain dense path below is that reference)


def dense_postprocess(outputs, box_decoding, conf_thres, nms_iou, max_det, multi_label, topk=pp.PRE_NMS_TOPK):
    boxes, class_scores = decode_outputs(outputs, box_decoding)
    bsz, _, num_classes = class_scores.shape
    if multi_label:
        scores = class_scores.reshape(bsz, -1)
    else:
        scores, labels = class_scores.max(2)
    k = min(topk, scores.shape[1])
    scores, top = scores.topk(k, dim=1)
    if multi_label:
        top, labels = top // num_classes, top % num_classes
    else:
        labels = labels.gather(1, top)
    boxes = boxes.gather(1, top[..., None].expand(-1, -1, 4))
    image = torch.arange(bsz)[:, None].expand(-1, k)
    keep = scores > conf_thres
    boxes, scores, labels, image = boxes[keep], scores[keep], labels[keep], image[keep]
    kept = batched_nms(boxes, scores, image * num_classes + labels, nms_iou)
    return [(boxes[m], scores[m], labels[m]) for m in (kept[image[kept] == i][:max_det] for i in range(bsz))]


def random_outputs(seed, bsz=3, num_classes=4, img=128, obj_mean=-4.0):
    """Raw outputs with objectness spread around obj_mean: a mix of sure-empty and candidate cells."""
    g = torch.Generator().manual_seed(seed)
    outputs = []
    for s in (8, 16, 32):
        raw = torch.randn(bsz, 3, img // s, img // s, 5 + num_classes, generator=g)
        raw[..., 4] = raw[..., 4] * 3 + obj_mean
        outputs.append(raw)
    outputs[1][-1, ..., 4] = -30.0  # one image with no candidate at all on a scale
    anchors = torch.tensor([[[10.0, 13], [16, 30], [33, 23]], [[30, 61], [62, 45], [59, 119]],
                            [[116, 90], [156, 198], [373, 326]]])
    return outputs, anchors


@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("conf_thres,assignment", [(0.005, "nearby_grid"), (0.1, "single_grid"),
                                                   (0.3, "all_grid")])
def test_prefilter_matches_dense_path(multi_label, conf_thres, assignment):
    for seed in range(3):
        outputs, anchors = random_outputs(seed)
        got = postprocess(outputs, decoding(anchors, assignment), conf_thres, 0.5, 50, multi_label)
        want = dense_postprocess(outputs, decoding(anchors, assignment), conf_thres, 0.5, 50, multi_label)
        assert sum(len(w[1]) for w in want) > 0
        for (gb, gs, gl), (wb, ws, wl) in zip(got, want):
            assert torch.equal(gl, wl) and torch.allclose(gs, ws, rtol=1e-6, atol=0)
            assert torch.allclose(gb, wb, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("multi_label", [False, True])
def test_prefilter_keeps_the_best_per_image_when_candidates_overflow(multi_label):
    # more candidates than pre_nms_topk in every image: both paths must keep the same top ones per image
    outputs, anchors = random_outputs(7, obj_mean=0.0)
    capped = []
    got = postprocess(outputs, decoding(anchors, "nearby_grid"), 0.005, 0.6, 300, multi_label, pre_nms_topk=40,
                      capped=capped)
    want = dense_postprocess(outputs, decoding(anchors, "nearby_grid"), 0.005, 0.6, 300, multi_label, topk=40)
    assert len(capped) == len(got) and min(count for count, _ in capped) > 40  # every image overflowed, said so
    for (count, best_cut), (boxes, scores, labels) in zip(capped, want):  # the best score below the cut, per image
        assert 0 < best_cut <= scores.min()
    for (gb, gs, gl), (wb, ws, wl) in zip(got, want):
        assert 0 < len(gs) <= 40
        assert torch.equal(gl, wl) and torch.allclose(gs, ws, rtol=1e-6, atol=0)
        assert torch.allclose(gb, wb, rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("multi_label", [False, True])
def test_cut_that_cannot_change_the_detections_is_not_reported(multi_label):
    # greedy NMS never lets a lower-scored box suppress a higher one: when max_det boxes survive among the top
    # pre_nms_topk, the candidates below the cut could not have entered the output
    outputs, anchors = random_outputs(7, obj_mean=0.0)
    capped = []
    got = postprocess(outputs, decoding(anchors, "nearby_grid"), 0.005, 0.6, 5, multi_label, pre_nms_topk=40,
                      capped=capped)
    want = postprocess(outputs, decoding(anchors, "nearby_grid"), 0.005, 0.6, 5, multi_label, pre_nms_topk=10 ** 6)
    assert capped == []
    postprocess(outputs, decoding(anchors, "nearby_grid"), 0.005, 0.6, 300, multi_label, 40, capped)
    assert len(capped) == len(got)  # the same inputs do overflow the cut: with max_det 300 it is reported
    for (gb, gs, gl), (wb, ws, wl) in zip(got, want):
        assert len(gs) == 5 and torch.equal(gl, wl) and torch.equal(gs, ws) and torch.equal(gb, wb)


def test_no_candidates_gives_empty_results_per_image():
    outputs, anchors = random_outputs(0, obj_mean=-40.0)
    results = postprocess(outputs, decoding(anchors, "nearby_grid"), 0.005, 0.5, 100, True)
    assert len(results) == 3
    for boxes, scores, labels in results:
        assert boxes.shape == (0, 4) and scores.shape == (0,) and labels.shape == (0,)


def test_evaluation_says_once_when_images_overflow_pre_nms_topk(tmp_path, log_lines):
    from yolo.config import BaseConfig
    from yolo.data.dataset import build_loader, read_records
    from yolo.engine.evaluator import predict_loader
    from yolo.models.detector import build_model

    cfg = BaseConfig()
    cfg.data_root, cfg.shapes_num_train, cfg.shapes_num_val = str(tmp_path / "shapes"), 2, 4
    cfg.img_size, cfg.width, cfg.batch_size, cfg.num_workers, cfg.pre_nms_topk = 64, 0.25, 2, 0, 5
    cfg.finalize()
    torch.manual_seed(0)
    model = build_model(cfg)
    with torch.no_grad():  # every cell a candidate: objectness and class logits far above conf_thres
        for head_conv in (m for m in model.modules() if isinstance(m, torch.nn.Conv2d) and m.out_channels == 24):
            head_conv.bias.fill_(5.0)
    loader = build_loader(cfg, read_records(cfg, "val"), train=False)
    detections = predict_loader(model, loader, cfg, torch.device("cpu"), show_progress=False)
    assert all(len(scores) <= 5 for _, scores, _ in detections.values())
    warnings = [line for line in log_lines if "pre_nms_topk" in line]
    assert len(warnings) == 1 and "4 of 4 images had more than pre_nms_topk = 5" in warnings[0]
    cfg.pre_nms_topk = 1000  # 3 anchors x (64 + 16 + 4) cells = 252 candidates per image: under the cap, no warning
    predict_loader(model, loader, cfg, torch.device("cpu"), show_progress=False)
    assert len([line for line in log_lines if "pre_nms_topk" in line]) == 1
    cfg.pre_nms_topk, cfg.predict_conf = 5, 1.0  # the cut drops only candidates below any drawn box: no warning
    predict_loader(model, loader, cfg, torch.device("cpu"), show_progress=False)
    assert len([line for line in log_lines if "pre_nms_topk" in line]) == 1


# ---- merge-NMS: each kept box becomes the score x IoU weighted mean of the candidates of its class that overlap it


def iou_by_hand(a, b):
    inter = max(0.0, min(a[2], b[2]) - max(a[0], b[0])) * max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def merged_by_hand(outputs, box_decoding, conf_thres, nms_iou, max_det, multi_label, topk):
    """dense_postprocess, then each kept box replaced by sum_j w_j box_j / sum_j w_j over the candidates j of its
    image and class (those NMS saw: the image's top-k above conf_thres), w_j = score_j x IoU when IoU > nms_iou or
    j is the kept box itself, else 0. One pair of boxes at a time."""
    boxes, class_scores = decode_outputs(outputs, box_decoding)
    bsz, _, num_classes = class_scores.shape
    plain = dense_postprocess(outputs, box_decoding, conf_thres, nms_iou, max_det, multi_label, topk)
    merged = []
    for b, (kept_boxes, kept_scores, kept_labels) in enumerate(plain):
        pairs = [(float(class_scores[b, n, c]), n, c) for n in range(boxes.shape[1]) for c in range(num_classes)]
        if not multi_label:
            best = {}
            for score, n, c in pairs:
                if n not in best or score > best[n][0]:
                    best[n] = (score, n, c)
            pairs = list(best.values())
        pairs = sorted(pairs, reverse=True)[:topk]
        pairs = [(s, boxes[b, n].double().tolist(), c) for s, n, c in pairs if s > conf_thres]
        new = []
        for box, label in zip(kept_boxes.double().tolist(), kept_labels.tolist()):
            weights, total = [0.0] * 4, 0.0
            for score, other, c in pairs:
                overlap = iou_by_hand(box, other)
                if c == label and (overlap > nms_iou or other == box):
                    w = score * (1.0 if other == box else overlap)
                    weights = [acc + w * x for acc, x in zip(weights, other)]
                    total += w
            new.append([x / total for x in weights])
        merged.append((torch.tensor(new, dtype=torch.float64).view(-1, 4), kept_scores, kept_labels))
    return merged


@pytest.mark.parametrize("multi_label", [False, True])
@pytest.mark.parametrize("topk", [pp.PRE_NMS_TOPK, 40])
def test_merged_boxes_match_a_loop_over_every_pair(multi_label, topk):
    outputs, anchors = random_outputs(3, bsz=2, num_classes=2, obj_mean=1.0)
    box_decoding = decoding(anchors, "nearby_grid")
    got = postprocess(outputs, box_decoding, 0.05, 0.3, 30, multi_label, pre_nms_topk=topk, merge=True)
    plain = postprocess(outputs, box_decoding, 0.05, 0.3, 30, multi_label, pre_nms_topk=topk)
    want = merged_by_hand(outputs, box_decoding, 0.05, 0.3, 30, multi_label, topk)
    moved = 0
    for (gb, gs, gl), (pb, ps, pl), (wb, ws, wl) in zip(got, plain, want):
        assert torch.equal(gl, pl) and torch.equal(gs, ps)  # merging moves boxes, never scores or labels
        assert torch.equal(gl, wl) and torch.allclose(gb.double(), wb, rtol=1e-5, atol=1e-3)
        moved += int(((gb - pb).abs().max(1).values > 0.01).sum())
    assert moved >= 2  # some kept boxes had overlapping candidates to merge with (with top-k 40 only a few)
