import torch

from yolo.postprocess import postprocess


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
    results = postprocess(outputs, anchors, (8, 16, 32), "single_grid", conf_thres=0.1, nms_iou=0.3, max_det=10)
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
    boxes, scores, _ = postprocess(outputs, anchors, (8, 16, 32), "single_grid", 0.01, 0.5, max_det=5)[0]
    assert len(scores) == 5 and torch.all(scores[:-1] >= scores[1:])
    assert abs(scores[0].item() - torch.sigmoid(torch.tensor(3.0)).item()) < 1e-4


def test_multi_label_keeps_each_class_above_threshold():
    anchors = torch.tensor([[[16.0, 16.0]], [[32.0, 32.0]], [[64.0, 64.0]]])
    outputs = [torch.full((1, 1, 64 // s, 64 // s, 5 + 3), -20.0) for s in (8, 16, 32)]
    outputs[0][0, 0, 3, 3, :4] = 0.0
    outputs[0][0, 0, 3, 3, 4] = 20.0                      # surely an object
    outputs[0][0, 0, 3, 3, 5:] = logit(torch.tensor([0.6, 0.3, 0.01]))  # unsure between classes 0 and 1
    single = postprocess(outputs, anchors, (8, 16, 32), "single_grid", 0.05, 0.5, 10)[0]
    multi = postprocess(outputs, anchors, (8, 16, 32), "single_grid", 0.05, 0.5, 10, multi_label=True)[0]
    assert single[2].tolist() == [0]
    assert multi[2].tolist() == [0, 1] and torch.allclose(multi[1], torch.tensor([0.6, 0.3]), atol=1e-4)
    assert torch.equal(multi[0][0], multi[0][1])  # the same box, once per class
