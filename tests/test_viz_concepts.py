"""The teaching pictures' numbers (yolo/viz/geometry.py, objectness.py, architecture.py, evaluation.py and the helpers
they use in yolo/metrics.py and yolo/models/head.py), each against an independent reference: torchvision, pycocotools,
the loss's own ignore mask, the model's real outputs, or a case worked by hand."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from conftest import ROOT  # noqa: E402
import torch  # noqa: E402
from torchvision.ops import box_iou, nms  # noqa: E402

from yolo.boxes import wh_iou  # noqa: E402
from yolo.config import BaseConfig, load_config  # noqa: E402
from yolo.loss import ignore_mask  # noqa: E402
from yolo.metrics import evaluate_detections, match_detections, ranked_ap  # noqa: E402
from yolo.models.detector import build_model  # noqa: E402
from yolo.models.head import BoxDecoding, decode, encode  # noqa: E402
from yolo.viz.architecture import draw_architecture, trace_architecture  # noqa: E402
from yolo.viz.evaluation import ap_per_iou_threshold, draw_ap_vs_iou, draw_nms_steps, draw_toy_ap, nms_steps  # noqa: E402
from yolo.viz.geometry import centred, decoded_prediction, draw_anchor_fit, draw_decoding, draw_iou_geometry, iou_parts  # noqa: E402
from yolo.viz.objectness import draw_ignore_rule, draw_objectness, ignored_cells, objectness_maps  # noqa: E402


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


# ------------------------------------------------------------------------------------------------ geometry
def test_iou_parts_equal_torchvision_and_centred_equals_shape_iou():
    rng = np.random.default_rng(0)
    for _ in range(20):
        a, b = (np.sort(rng.uniform(0, 100, (2, 2)), 0).T.reshape(-1)[[0, 2, 1, 3]] for _ in range(2))
        parts = iou_parts(a, b)
        assert parts["iou"] == pytest.approx(float(box_iou(torch.tensor(a)[None], torch.tensor(b)[None])), abs=1e-9)
        centred_b = centred(b, (a[:2] + a[2:]) / 2)
        size = lambda box: torch.tensor(box[2:] - box[:2])[None]  # noqa: E731
        assert iou_parts(a, centred_b)["iou"] == pytest.approx(float(wh_iou(size(a), size(b))), abs=1e-9)


def test_iou_parts_by_hand():
    parts = iou_parts((0, 0, 10, 10), (5, 5, 15, 15))  # 25 shared of 100 + 100 - 25
    assert (parts["inter"], parts["union"], parts["iou"]) == (25, 175, pytest.approx(25 / 175))
    assert list(parts["overlap"]) == [5, 5, 10, 10]
    assert iou_parts((0, 0, 1, 1), (2, 2, 3, 3))["overlap"] is None


def test_decoded_prediction_window_is_reach_cells_around_the_cell_centre():
    found = decoded_prediction((0.3, -1.0, 0.5, 0.0), (4, 6), (30, 20), 16, 1.5)
    centre = np.array([4.5, 6.5]) * 16
    assert np.allclose(found["window"], [*(centre - 1.5 * 16), *(centre + 1.5 * 16)])
    assert np.allclose(found["max_wh"], [120, 80])  # 4 x the anchor
    sigmoid = lambda t: 1 / (1 + np.exp(-t))  # noqa: E731
    assert found["box"][0] == pytest.approx((4.5 + (2 * sigmoid(0.3) - 1) * 1.5) * 16)
    assert found["box"][3] == pytest.approx(20 * (2 * sigmoid(0.0)) ** 2)


def test_encode_inverts_decode():
    rng = torch.Generator().manual_seed(0)
    cell = torch.randint(0, 10, (50, 2), generator=rng).float()
    anchor = torch.rand(50, 2, generator=rng) * 40 + 10
    logits = torch.randn(50, 4, generator=rng) * 2
    box = decode(logits, cell, anchor, 16, 1.5)
    assert torch.allclose(encode(box, cell, anchor, 16, 1.5), logits, atol=1e-3)


# ------------------------------------------------------------------------------------------------ evaluation
def test_nms_steps_keep_what_torchvision_keeps():
    rng = torch.Generator().manual_seed(1)
    centres = torch.rand(40, 2, generator=rng) * 60
    boxes = torch.cat((centres, centres + 20 + torch.rand(40, 2, generator=rng) * 20), 1)
    scores = torch.rand(40, generator=rng)
    for thres in (0.3, 0.5, 0.7):
        steps = nms_steps(boxes, scores, thres)
        assert [s["keep"] for s in steps] == nms(boxes, scores, thres).tolist()
        dropped = sorted(i for s in steps for i, _ in s["dropped"])
        assert sorted(dropped + [s["keep"] for s in steps]) == list(range(40))  # every box kept or dropped once


def test_match_detections_by_hand():
    gt = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], float)
    det = np.array([[0, 0, 10, 10],      # TP for GT 0
                    [0, 0, 10, 9],       # duplicate of GT 0: FP
                    [20, 20, 30, 30],    # right place, wrong class: FP
                    [50, 50, 60, 60]])   # nothing there: FP
    is_tp, missed = match_detections(det, [0, 0, 0, 0], gt, [0, 1])
    assert is_tp.tolist() == [True, False, False, False] and missed.tolist() == [False, True]


TOY = {"scores": [0.95, 0.9, 0.8, 0.7, 0.6, 0.5], "is_tp": [True, False, True, True, False, True], "num_gt": 5}


def toy_image():
    """One image: num_gt separated GTs of one class; a TP detection copies a new GT, a FP sits where no GT is."""
    gt = np.array([[40 * k, 10, 40 * k + 30, 40] for k in range(TOY["num_gt"])], float)
    det, next_gt = [], 0
    for k, good in enumerate(TOY["is_tp"]):
        det.append(gt[next_gt] if good else [40 * k, 300, 40 * k + 30, 330])
        next_gt += good
    return gt, np.array(det, float)


def test_toy_ap_equals_pycocotools_and_the_hand_computation():
    gt, det = toy_image()
    result = evaluate_detections([gt], [np.zeros(len(gt), int)], [np.zeros(len(gt), bool)], [(400, 400)],
                                 [det], [np.array(TOY["scores"])], [np.zeros(len(det), int)], ["thing"])
    ap, precision, recall, _ = ranked_ap(TOY["is_tp"], TOY["num_gt"])
    assert ap == pytest.approx(result.map50, abs=1e-9)
    # by hand: recall 0..0.2 at precision 1 (21 of the 101 levels); 0.21..0.6 at 3/4, the envelope lifting rank 3's
    # 2/3 to rank 4's 3/4; 0.61..0.8 at 4/6; then 0
    assert ap == pytest.approx((21 * 1 + 40 * 0.75 + 20 * 4 / 6) / 101)
    assert np.allclose(precision, [1, 1 / 2, 2 / 3, 3 / 4, 3 / 5, 4 / 6]) and np.allclose(recall, [.2, .2, .4, .6, .6, .8])
    fig, drawn_ap = draw_toy_ap(TOY["is_tp"], TOY["scores"], TOY["num_gt"])
    assert drawn_ap == ap


def test_ap_per_iou_threshold_averages_to_map():
    rng = np.random.default_rng(3)
    gts, dets, scores, labels = [], [], [], []
    for _ in range(6):  # detections shifted by various amounts: their IoUs spread over 0.4 .. 1
        gt = np.array([[x, y, x + 40, y + 30] for x, y in rng.uniform(0, 300, (4, 2))])
        shift = rng.uniform(0, 12, (4, 1)) * np.array([[1, 0, 1, 0]])
        gts.append(gt)
        dets.append(gt + shift)
        scores.append(rng.uniform(0.1, 1, 4))
        labels.append(rng.integers(0, 2, 4))
    result = evaluate_detections(gts, labels, [np.zeros(4, bool)] * 6, [(400, 400)] * 6, dets, scores, labels,
                                 ["a", "b"])
    thresholds, ap = ap_per_iou_threshold(result)
    assert len(ap) == 10 and ap[0] == pytest.approx(result.map50) and ap.mean() == pytest.approx(result.map)
    assert ap[0] > ap[-1]  # the shifted boxes fail the strict thresholds
    draw_ap_vs_iou(result)


# ------------------------------------------------------------------------------------------------ objectness
@pytest.mark.parametrize("thres", [0.5, 0.3])
@pytest.mark.parametrize("reach", [1.5, 0.5])
def test_ignored_cells_equal_what_the_loss_ignores(thres, reach):
    rng = torch.Generator().manual_seed(2)
    raw = torch.randn(2, 3, 8, 8, 8, generator=rng) * 0.4  # boxes near their anchors: some overlap the GT
    anchors = torch.tensor([[14.0, 14.0], [22.0, 30.0], [40.0, 40.0]])
    gt = torch.tensor([1.0, 0.0, 30.0, 34.0, 24.0, 20.0])  # on image 1
    mine = ignored_cells(raw, anchors, 8, reach, gt, thres)
    by_loss = ~ignore_mask(raw, anchors, 8, reach, gt[None], thres)[1]
    assert mine.any() and torch.equal(mine, by_loss)
    assert not ignore_mask(raw, anchors, 8, reach, gt[None], thres)[0].logical_not().any()  # image 0: nothing


def test_ignore_and_objectness_figures_draw():
    decoding = BoxDecoding(torch.tensor([[[10.0, 10.0]] * 2] * 3), (8, 16, 32), 1.5)
    outputs = [torch.zeros(1, 2, 64 // s, 64 // s, 7) for s in (8, 16, 32)]
    outputs[0][0, 1, 3, 4, 4] = 5.0
    maps = objectness_maps(outputs)
    assert [m.shape for m in maps] == [(8, 8), (4, 4), (2, 2)] and maps[0][3, 4] == pytest.approx(1 / (1 + np.exp(-5)))
    image = np.zeros((64, 64, 3), np.uint8)
    draw_objectness(image, outputs, (8, 16, 32), np.array([[10, 10, 30, 30]]))
    fig, ignored = draw_ignore_rule(image, outputs, decoding, torch.tensor([0.0, 0, 36, 28, 10, 10]), 0.5)
    assert ignored[0].shape == (2, 8, 8) and ignored[0][:, 3, 4].all()  # anchors at the GT's own cell ignored


# ------------------------------------------------------------------------------------------------ architecture
@pytest.mark.parametrize("backbone,width", [("resnet18", 0.25), ("mobilenet_v3_small", 0.5)])
def test_architecture_trace_equals_the_model_outputs(backbone, width):
    cfg = BaseConfig()
    cfg.backbone, cfg.width, cfg.img_size = backbone, width, 96
    cfg.finalize()
    model = build_model(cfg).eval()
    trace = trace_architecture(model, cfg.img_size)
    with torch.no_grad():
        outputs = model(torch.zeros(1, 3, 96, 96, dtype=torch.uint8))
    assert trace["heads"] == [[tuple(o.shape) for o in outputs]]
    assert [f[0] for f in trace["features"]] == list(model.backbone.out_channels)
    assert [f[3] for f in trace["features"]] == list(cfg.strides)
    p_channels = [trace["blocks"][j][0]["out"][1] for j in (7, 4, 1)]  # out3, out4, out5 feed the heads
    assert p_channels == list(model.neck.out_channels)
    draw_architecture(trace, backbone_name=backbone)


@pytest.mark.parametrize("head,bins", [("conv1x1", 0), ("conv1x1", 8), ("tower3x3", 4)])
def test_architecture_head_label_counts_the_prediction_conv_channels(head, bins):
    cfg = BaseConfig()
    cfg.width, cfg.img_size, cfg.head, cfg.box_bins = 0.25, 64, head, bins
    cfg.finalize()
    model = build_model(cfg)
    label = trace_architecture(model, cfg.img_size)["head_labels"][0]
    anchors, per_anchor = label.split("-> ")[1].removesuffix(" ch").split(" x ", 1)
    conv = (model.heads[0].predict if head != "conv1x1" else model.heads[0]).convs[0]
    assert int(anchors) * eval(per_anchor.replace("x", "*")) == conv.out_channels  # e.g. 3 x (4x8 + 1 + 1)
    assert label.startswith("towers + ") == (head != "conv1x1")


def test_architecture_trace_shows_the_copies_of_a_branched_neck():
    cfg = load_config(str(ROOT / "configs" / "multitask_shapes.py"))  # the tests may run from another folder
    cfg.img_size, cfg.width = 64, 0.25
    cfg.finalize()
    model = build_model(cfg)
    trace = trace_architecture(model, cfg.img_size)
    assert [[c["tasks"] for c in block] for block in trace["blocks"]] == model.neck.groups
    assert len(trace["heads"]) == len(cfg.task_names) == 2
    assert model.training  # the trace leaves the model's mode as it was
    draw_architecture(trace, cfg.task_names)


def test_geometry_and_nms_figures_draw():
    draw_iou_geometry()
    wh = np.abs(np.random.default_rng(0).normal(40, 15, (200, 2))) + 5
    draw_anchor_fit(wh, {"a": [[20, 20], [40, 40], [60, 60]]}, np.zeros(200, int), ["thing"])
    fig, ax = plt.subplots()
    draw_decoding(ax, (0.5, 0.2, 0.3, -0.2), (5, 5), (30, 30), 16, 1.5, (20, 20))
    boxes = np.array([[10, 10, 50, 50], [12, 11, 52, 49], [30, 30, 70, 70], [11, 9, 48, 51]], float)
    fig, steps = draw_nms_steps(np.zeros((80, 80, 3), np.uint8), boxes, np.array([0.9, 0.8, 0.7, 0.6]), 0.5)
    assert [s["keep"] for s in steps] == [0, 2]


def test_prediction_figure_one_caption_per_detection_and_the_ground_truth_dashed(tmp_path):
    from PIL import Image

    from yolo.data.records import Record
    from yolo.viz.detections import prediction_figure

    path = tmp_path / "a.jpg"
    Image.new("RGB", (120, 90), (90, 90, 90)).save(path)
    gt = np.array([[10, 10, 50, 50], [60, 20, 100, 80]], np.float32)
    record = Record(str(path), 120, 90, gt, np.array([0, 1]), np.zeros(2, bool))
    boxes = np.array([[11, 10, 50, 52], [12, 11, 49, 50], [60, 22, 99, 80], [0, 0, 20, 20]], np.float32)
    detections = {0: (boxes, np.array([0.9, 0.8, 0.7, 0.1]), np.array([0, 0, 1, 2]))}
    fig = prediction_figure([record], detections, ["a", "b", "c"], conf=0.3)
    ax = fig.axes[0]
    captions = sorted(t.get_text() for t in ax.texts)
    assert captions == ["a 0.80", "a 0.90", "b 0.70"]  # one per detection above conf, none for the one below
    dashed = [p for p in ax.patches if p.get_linestyle() == "--"]
    assert len(dashed) == len(gt)
    # the second "a" caption would cover the first one above the nearly identical box: it moves inside its box
    first, second = (t.get_position() for t in sorted(ax.texts, key=lambda t: -float(t.get_text().split()[1]))[:2])
    assert first[1] < 11 < second[1]


def test_outputs_predicting_a_gt_decode_onto_it_where_they_can():
    from yolo.models.head import decode_boxes
    from yolo.viz.objectness import outputs_predicting

    decoding = BoxDecoding(torch.tensor([[[10.0, 10.0], [20.0, 14.0]]] * 3), (8, 16, 32), 1.5)
    gt = torch.tensor([0.0, 1.0, 37.0, 29.0, 24.0, 18.0])  # centre in cell (4, 3) of the stride-8 grid
    outputs = outputs_predicting(gt, decoding, [(8, 8), (4, 4), (2, 2)], num_classes=2)
    boxes = decode_boxes(outputs[0], decoding.anchors[0], 8, 1.5)[0]  # (A, H, W, 4)
    assert torch.allclose(boxes[:, 3, 4], gt[2:6].expand(2, 4), atol=1e-3)   # its own cell reaches it exactly
    assert torch.allclose(boxes[:, 3, 5], gt[2:6].expand(2, 4), atol=1e-3)   # so does a neighbour (reach 1.5)
    far = boxes[0, 7, 7]                                                       # a far cell gets as close as it can
    assert torch.allclose(far[:2], torch.tensor([7.5 - 1.5, 7.5 - 1.5]) * 8, atol=1e-3)
