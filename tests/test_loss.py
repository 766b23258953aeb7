import numpy as np
import torch

from yolo.config import BaseConfig
from yolo.data.shapes import render_shapes_image
from yolo.data.transforms import build_transform
from yolo.loss import YOLOLoss, padded_gt_boxes
from yolo.models.detector import build_model


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
        loss, items, stats = YOLOLoss(cfg)(model(images), t, model.anchors)
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
            loss, _, _ = loss_fn(model(images), targets, model.anchors)
            first = loss.item() if first is None else first
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert loss.item() < 0.1 * first, (strategy, first, loss.item())


def test_padded_gt_boxes_puts_each_box_in_its_image():
    targets = torch.tensor([[1, 0, 10, 10, 4, 4], [0, 1, 20, 20, 2, 2], [1, 2, 30, 30, 6, 6]], dtype=torch.float32)
    boxes = padded_gt_boxes(targets, batch_size=3)
    assert boxes.shape == (3, 2, 4)
    assert torch.equal(boxes[0, 0], torch.tensor([19.0, 19, 21, 21])) and not boxes[0, 1].any()
    assert torch.equal(boxes[1], torch.tensor([[8.0, 8, 12, 12], [27, 27, 33, 33]])) and not boxes[2].any()
