import math
import numpy as np
import pytest
import torch

from yolo.boxes import box_iou, cxcywh_to_xyxy
from yolo.config import BaseConfig
from yolo.data.shapes import render_shapes_image
from yolo.data.transforms import build_transform
from yolo.loss import YOLOLoss, ignore_mask
from yolo.models.detector import build_model
from yolo.models.head import REACH, decode_boxes, reach_in_cells


def tiny_config(**fields):
    cfg = BaseConfig()
    cfg.width, cfg.img_size = 0.25, 160
    cfg.anchors = [[(8, 8), (12, 12), (16, 16)], [(24, 24), (32, 32), (44, 44)], [(60, 60), (80, 80), (110, 110)]]
    for k, v in fields.items():
        setattr(cfg, k, v)
    return cfg.finalize()


def fixed_batch(cfg, n=2, seed=0):
    rng = np.random.default_rng(seed)
    transform = build_transform(cfg, train=False)
    images, rows = [], []
    for i in range(n):
        image, boxes, labels = render_shapes_image(rng, 200, 160, cfg.class_names)
        out = transform(image=image, bboxes=boxes, labels=labels)
        images.append(torch.from_numpy(out["image"]).permute(2, 0, 1))
        for (x1, y1, x2, y2), c in zip(out["bboxes"], out["labels"]):
            rows.append([i, c, (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1])
    return torch.stack(images), torch.tensor(rows, dtype=torch.float32).view(-1, 6)


def test_loss_is_a_finite_scalar_with_gradients_and_handles_empty_targets():
    cfg = tiny_config()
    torch.manual_seed(0)
    model = build_model(cfg)
    images, targets = fixed_batch(cfg)
    for t in (targets, torch.zeros(0, 6)):
        loss, items, stats = YOLOLoss(cfg)(model(images), t, model.decoding)
        assert loss.ndim == 0 and torch.isfinite(loss)
        loss.backward()
        assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
        assert set(items) == {"box", "obj", "cls", "box_s8", "box_s16", "box_s32"} and stats["num_gt"] == len(t)


@pytest.mark.slow
def test_overfitting_one_batch_cuts_the_loss_by_90_percent():
    for strategy in ("nearby_grid",):
        cfg = tiny_config(label_assignment=strategy)
        torch.manual_seed(0)
        model = build_model(cfg)
        images, targets = fixed_batch(cfg)
        loss_fn = YOLOLoss(cfg)
        opt = torch.optim.Adam(model.parameters(), lr=2e-3)
        first = None
        for it in range(150):
            loss, _, _ = loss_fn(model(images), targets, model.decoding)
            first = loss.item() if first is None else first
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert loss.item() < 0.1 * first, (strategy, first, loss.item())


def dense_ignore_mask(raw, anchors_wh, stride, reach, targets, thres):
    """Reference: every cell's predicted box against every GT of its image, IoU from torchvision."""
    b, a, h, w, _ = raw.shape
    boxes = cxcywh_to_xyxy(decode_boxes(raw, anchors_wh, stride, reach)).view(b, -1, 4)
    mask = torch.ones(b, a * h * w, dtype=torch.bool)
    for i in range(b):
        mine = targets[targets[:, 0] == i]
        if len(mine):
            mask[i] = box_iou(boxes[i], cxcywh_to_xyxy(mine[:, 2:6])).amax(1) <= thres
    return mask.view(b, a, h, w)


def random_case(seed, img=128, num_gt=30, bsz=3):
    g = torch.Generator().manual_seed(seed)
    raws = [torch.randn(bsz, 3, img // s, img // s, 7, generator=g) for s in (8, 16, 32)]
    centre = torch.rand(num_gt, 2, generator=g) * img * 1.1 - 0.05 * img  # a few centres just off the image
    size = torch.rand(num_gt, 2, generator=g) * 70 + 4
    image = torch.randint(0, bsz - 1, (num_gt, 1), generator=g).float()   # the last image has no GT
    targets = torch.cat((image, torch.zeros(num_gt, 1), centre, size), 1)
    anchors = torch.tensor([[[10.0, 13], [16, 30], [33, 23]], [[30, 61], [62, 45], [59, 119]],
                            [[116, 90], [156, 198], [373, 326]]])
    return raws, targets, anchors


@pytest.mark.parametrize("thres", [0.3, 0.5, 0.6])
@pytest.mark.parametrize("strategy", ["single_grid", "nearby_grid", "all_grid"])
def test_windowed_ignore_mask_matches_every_cell_against_every_gt(thres, strategy):
    ignored = 0
    for seed in range(3):
        raws, targets, anchors = random_case(seed)
        for s, (raw, stride) in enumerate(zip(raws, (8, 16, 32))):
            reach = reach_in_cells(REACH[strategy], raw.shape[2:4])
            want = dense_ignore_mask(raw, anchors[s], stride, reach, targets, thres)
            got = ignore_mask(raw, anchors[s], stride, reach, targets, thres)
            assert torch.equal(got, want), (seed, s)
            ignored += int((~want).sum())
            assert want[-1].all()  # the image without GT ignores nothing
    assert ignored >= 10  # the cases do exercise the ignore rule


def test_ignore_mask_without_targets_or_with_threshold_off_ignores_nothing():
    raws, targets, anchors = random_case(0)
    assert ignore_mask(raws[0], anchors[0], 8, 1.5, torch.zeros(0, 6), 0.5).all()
    assert ignore_mask(raws[0], anchors[0], 8, 1.5, targets, 1.0).all()


def test_ignore_mask_finds_a_wide_prediction_centred_outside_its_gt():
    # GT x 40..80, y 40..80. Cell (gx 12, gy 7) of stride 8, anchor (33, 23), predicts x 40..160, y 40..80: its
    # centre (100, 60) is 20 px right of the GT, yet IoU = 1600 / 4800 = 0.33. Below IoU 0.5 such cells count.
    logit = lambda p: float(torch.log(torch.tensor(p / (1 - p))))
    raw = torch.full((1, 3, 16, 16, 6), -10.0)
    raw[0, 2, 7, 12, :4] = torch.tensor([0.0, 0.0, logit((120 / 33) ** 0.5 / 2), logit((40 / 23) ** 0.5 / 2)])
    targets = torch.tensor([[0.0, 0, 60, 60, 40, 40]])
    anchors = torch.tensor([[10.0, 13], [16, 30], [33, 23]])
    for thres, ignored in ((0.3, True), (0.5, False)):
        mask = ignore_mask(raw, anchors, 8, 0.5, targets, thres)
        assert torch.equal(mask, dense_ignore_mask(raw, anchors, 8, 0.5, targets, thres))
        assert bool(mask[0, 2, 7, 12]) is not ignored


# ------------------------------------------------------------------------------------------------- plain-loop reference
def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


def bce(logit, target):
    p = sigmoid(logit)
    return -(target * math.log(p) + (1 - target) * math.log(1 - p))


def iou_xywh(a, b):
    """IoU of two (cx, cy, w, h) boxes, by hand."""
    ax1, ay1, ax2, ay2 = a[0] - a[2] / 2, a[1] - a[3] / 2, a[0] + a[2] / 2, a[1] + a[3] / 2
    bx1, by1, bx2, by2 = b[0] - b[2] / 2, b[1] - b[3] / 2, b[0] + b[2] / 2, b[1] + b[3] / 2
    inter = max(0.0, min(ax2, bx2) - max(ax1, bx1)) * max(0.0, min(ay2, by2) - max(ay1, by1))
    return inter / (a[2] * a[3] + b[2] * b[3] - inter)


def decoded_box(t, gx, gy, anchor, stride, reach):
    """The head's decoding written out for one cell: centre = (cell + 0.5 + (2 sigmoid(t) - 1) reach) stride,
    size = anchor (2 sigmoid(t))^2."""
    return ((gx + 0.5 + (2 * sigmoid(t[0]) - 1) * reach) * stride, (gy + 0.5 + (2 * sigmoid(t[1]) - 1) * reach) * stride,
            anchor[0] * (2 * sigmoid(t[2])) ** 2, anchor[1] * (2 * sigmoid(t[3])) ** 2)


def loop_loss(outputs, targets, assignments, cfg, anchors, strides, reach_name):
    """The loss one positive and one cell at a time: box 1 - IoU and class BCE averaged over all positives;
    objectness BCE averaged over each scale's counted cells (positives with target IoU, negatives with 0, a negative
    left out when its decoded box overlaps a GT of its image by more than ignore_iou_thres), weighted per scale;
    a positive's box term weighted by box_scale_weights and by 1 + g (1 - w h / image area), g = box_size_gain, its
    objectness target (1 - r) + r IoU, r = obj_iou_ratio."""
    box_terms, cls_terms, obj, scale_of_box, weighted = [], [], 0.0, [], []
    for s, (raw, asg) in enumerate(zip(outputs, assignments)):
        raw = raw.double().tolist()
        b_n, a_n, h, w = len(raw), len(raw[0]), len(raw[0][0]), len(raw[0][0][0])
        reach = reach_in_cells(REACH[reach_name], (h, w))
        positives = {}
        for b, a, gy, gx, g in zip(asg.batch.tolist(), asg.anchor.tolist(), asg.gy.tolist(), asg.gx.tolist(),
                                   asg.gt.tolist()):
            t = raw[b][a][gy][gx]
            iou = iou_xywh(decoded_box(t, gx, gy, anchors[s][a], strides[s], reach), targets[g][2:])
            box_terms.append(1 - iou)
            area = (w * strides[s]) * (h * strides[s])  # the input image's
            size = 1 + cfg.box_size_gain * (1 - targets[g][4] * targets[g][5] / area)
            weighted.append(cfg.box_scale_weights[s] * size * (1 - iou))
            scale_of_box.append(strides[s])
            cls = int(targets[g][1])
            cls_terms.append(sum(bce(t[5 + c], float(c == cls)) for c in range(cfg.num_classes)) / cfg.num_classes)
            positives[(b, a, gy, gx)] = 1 - cfg.obj_iou_ratio + cfg.obj_iou_ratio * max(iou, 0.0)
        total, counted = 0.0, 0
        for b in range(b_n):
            gts = [row[2:] for row in targets if int(row[0]) == b]
            for a in range(a_n):
                for gy in range(h):
                    for gx in range(w):
                        t = raw[b][a][gy][gx]
                        if (b, a, gy, gx) in positives:
                            total, counted = total + bce(t[4], positives[(b, a, gy, gx)]), counted + 1
                            continue
                        box = decoded_box(t, gx, gy, anchors[s][a], strides[s], reach)
                        if any(iou_xywh(box, g) > cfg.ignore_iou_thres for g in gts):
                            continue  # ignored: a good box of an object another anchor is responsible for
                        total, counted = total + bce(t[4], 0.0), counted + 1
        obj += cfg.obj_scale_weights[s] * total / max(counted, 1)
    box = sum(weighted) / len(weighted)
    cls = sum(cls_terms) / len(cls_terms)
    per_scale = {}  # stride -> mean box term of that scale's positives (logged, not part of the loss)
    for stride in strides:
        mine = [term for term, at in zip(box_terms, scale_of_box) if at == stride]
        per_scale[stride] = sum(mine) / len(mine) if mine else math.nan
    loop_loss.per_scale = per_scale
    return cfg.box_weight * box + cfg.obj_weight * obj + cfg.cls_weight * cls, box, obj, cls


@pytest.mark.parametrize("strategy", ["single_grid", "nearby_grid", "all_grid"])
@pytest.mark.parametrize("seed", [0, 1])
@pytest.mark.parametrize("box_scale_weights, obj_iou_ratio, box_size_gain",
                         [((1.0, 1.0, 1.0), 1.0, 0.0), ((2.0, 1.0, 0.5), 0.3, 1.0)])
def test_loss_equals_a_plain_loop_reference(strategy, seed, box_scale_weights, obj_iou_ratio, box_size_gain):
    """Small random cases (2 images, 64 px: grids 8, 4, 2) with random raw outputs, so that some negatives are
    ignored and some are not; the ignore threshold low enough (0.3) that the rule matters. At the defaults, and with
    per-scale and per-size box weights and an objectness target mixed with 1."""
    from yolo.assign import assign
    from yolo.models.head import BoxDecoding

    cfg = tiny_config(img_size=64, label_assignment=strategy, box_loss="iou", ignore_iou_thres=0.3,
                      box_scale_weights=box_scale_weights, obj_iou_ratio=obj_iou_ratio, box_size_gain=box_size_gain,
                      anchors=[[(6, 6), (10, 8), (8, 12)], [(16, 16), (24, 18), (18, 26)], [(32, 32), (48, 40), (40, 56)]])
    gen = torch.Generator().manual_seed(seed)
    outputs = [torch.randn(2, 3, 64 // s, 64 // s, 5 + cfg.num_classes, generator=gen, dtype=torch.float64).float()
               for s in (8, 16, 32)]
    n = 5
    centres = torch.rand(n, 2, generator=gen) * 56 + 4
    sizes = torch.rand(n, 2, generator=gen) * 40 + 4
    targets = torch.cat((torch.tensor([[0.0], [0], [1], [1], [1]]), torch.randint(0, 3, (n, 1), generator=gen).float(),
                         centres, sizes), 1)
    decoding = BoxDecoding(torch.tensor(cfg.anchors, dtype=torch.float32), (8, 16, 32), REACH[strategy])
    loss_fn = YOLOLoss(cfg)
    loss, items, _ = loss_fn(outputs, targets, decoding)
    # the same assignment (assign.py has its own loop reference tests), drawn with the same generator state
    assignments, _ = assign(targets, decoding.anchors, [o.shape[2:4] for o in outputs], decoding.strides, strategy,
                            cfg.match_iou_thres, cfg.filter_by_max_iou, cfg.assign_unmatched_to_best,
                            torch.Generator().manual_seed(cfg.seed))
    ref, box, obj, cls = loop_loss(outputs, targets.tolist(), assignments, cfg, cfg.anchors, (8, 16, 32), strategy)
    assert items["box"].item() == pytest.approx(box, abs=1e-5)
    assert items["obj"].item() == pytest.approx(obj, abs=1e-5)
    assert items["cls"].item() == pytest.approx(cls, abs=1e-5)
    assert loss.item() == pytest.approx(ref, abs=1e-5)
    for stride, want in loop_loss.per_scale.items():  # NaN where a scale has no positives, on both sides
        assert items[f"box_s{stride}"].item() == pytest.approx(want, abs=1e-5, nan_ok=True)
    assert sum(not math.isnan(v) for v in loop_loss.per_scale.values()) >= 2  # the per-scale means were compared
