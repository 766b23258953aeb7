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
        assert set(items) == {"box", "obj", "cls"} and stats["num_gt"] == len(t)


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
