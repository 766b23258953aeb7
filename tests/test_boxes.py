import math

import pytest
import torch
from torchvision.ops import box_iou, complete_box_iou_loss, distance_box_iou_loss, generalized_box_iou_loss

from yolo.boxes import cxcywh_to_xyxy, iou_family, wh_iou


def random_boxes(n, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 100
    wh = torch.rand(n, 2, generator=g) * 50 + 1
    return torch.cat((xy, wh), 1)  # cx, cy, w, h


def test_iou_family_matches_torchvision_losses():
    a, b = random_boxes(200, 0), random_boxes(200, 1)
    b[:100] = a[:100] + torch.randn(100, 4) * 3  # many overlapping pairs
    b[:, 2:] = b[:, 2:].abs() + 0.5
    ax, bx = cxcywh_to_xyxy(a), cxcywh_to_xyxy(b)
    assert torch.allclose(iou_family(a, b, "iou"), box_iou(ax, bx).diagonal(), atol=1e-5)
    assert torch.allclose(1 - iou_family(a, b, "giou"), generalized_box_iou_loss(ax, bx), atol=1e-5)
    assert torch.allclose(1 - iou_family(a, b, "diou"), distance_box_iou_loss(ax, bx), atol=1e-5)
    assert torch.allclose(1 - iou_family(a, b, "ciou"), complete_box_iou_loss(ax, bx), atol=1e-5)


def test_ciou_hand_computed_case():
    # pred 2x2 at (1,1), target 2x4 at (2,2): overlap [0,2]x[0,2] vs [1,3]x[0,4]
    pred, target = torch.tensor([1.0, 1.0, 2.0, 2.0]), torch.tensor([2.0, 2.0, 2.0, 4.0])
    inter, union = 1 * 2, 4 + 8 - 2
    iou = inter / union
    rho2, c2 = 1 ** 2 + 1 ** 2, 3 ** 2 + 4 ** 2  # hull [0,3]x[0,4]
    v = 4 / math.pi ** 2 * (math.atan(2 / 4) - math.atan(2 / 2)) ** 2
    alpha = v / (1 - iou + v)
    assert iou_family(pred, target, "ciou").item() == pytest.approx(iou - rho2 / c2 - alpha * v, abs=1e-6)
    assert iou_family(pred, target, "giou").item() == pytest.approx(iou - (12 - union) / 12, abs=1e-6)


def test_ciou_alpha_is_constant_in_backward():
    pred = torch.tensor([1.0, 1.0, 2.0, 3.0], requires_grad=True)
    target = torch.tensor([1.5, 1.0, 2.0, 2.0])
    iou_family(pred, target, "ciou").backward()
    # reference: same formula with alpha computed from detached values
    p = pred.detach().clone().requires_grad_(True)
    iou = iou_family(p, target, "iou")
    v = 4 / math.pi ** 2 * (torch.atan(target[2] / target[3]) - torch.atan(p[2] / p[3])) ** 2
    alpha = (v / (1 - iou + v)).detach()
    (iou_family(p, target, "diou") - alpha * v).backward()
    assert torch.allclose(pred.grad, p.grad, atol=1e-6)


def test_wh_iou_against_box_iou():
    a, b = random_boxes(30, 2), random_boxes(40, 3)
    centred_a = torch.cat((torch.zeros(30, 2), a[:, 2:]), 1)
    centred_b = torch.cat((torch.zeros(40, 2), b[:, 2:]), 1)
    expected = box_iou(cxcywh_to_xyxy(centred_a), cxcywh_to_xyxy(centred_b))
    assert torch.allclose(wh_iou(a[:, 2:], b[:, 2:]), expected, atol=1e-6)


def test_unknown_kind():
    with pytest.raises(ValueError, match="unknown IoU kind"):
        iou_family(torch.ones(4), torch.ones(4), "xiou")
