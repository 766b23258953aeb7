"""Distribution-style box regression (config box_bins): the head's expected value against a hand-computed case, the
distribution focal loss against a plain loop, training and eval outputs that agree, every head kind, export parity
through ONNX Runtime, and a model that learns with it."""
import math

import pytest
import torch

from test_export import outputs_close, two_task_checkpoint
from test_loss import fixed_batch, loop_loss, tiny_config
from yolo.config import BaseConfig, apply_overrides
from yolo.loss import YOLOLoss, distribution_focal_loss
from yolo.models.detector import build_model
from yolo.models.head import REACH, BoxDecoding, YOLOHead, box_numbers, decode, decode_boxes
from yolo.models.heads import build_head
from yolo.models.onnx_model import OnnxModel
from yolo.tasks import export

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one torch thread


def test_a_head_with_three_bins_decodes_a_hand_computed_box():
    """Bins at 0, 0.5, 1 with logits ln 1, ln 2, ln 5: probabilities 1/8, 2/8, 5/8, expected u = 0.5 * 2/8 + 5/8 =
    0.75 for all four numbers. Cell (0, 0) at stride 8, reach 1.5, anchor 10 x 20:
    centre = (0 + 0.5 + (2 * 0.75 - 1) * 1.5) * 8 = 10, size = anchor * (2 * 0.75)^2 = 22.5 x 45."""
    head = YOLOHead([4], num_anchors=1, num_classes=2, img_size=64, strides=(8,), box_bins=3).eval()
    conv = head.convs[0]
    torch.nn.init.zeros_(conv.weight)
    bias = conv.bias.detach().clone()
    bias[:12] = torch.tensor([0.0, math.log(2), math.log(5)]).repeat(4)
    conv.bias.data = bias
    with torch.no_grad():
        out, = head([torch.zeros(1, 4, 1, 1)])
    assert out.shape == (1, 1, 1, 1, 5 + 2)  # the plain head's layout
    assert torch.sigmoid(out[0, 0, 0, 0, :4]).tolist() == pytest.approx([0.75] * 4, abs=1e-6)
    box = decode_boxes(out, torch.tensor([[10.0, 20.0]]), 8, 1.5)[0, 0, 0, 0]
    assert box.tolist() == pytest.approx([10.0, 10.0, 22.5, 45.0], abs=1e-4)
    # objectness and classes pass through untouched
    assert out[0, 0, 0, 0, 4:].tolist() == pytest.approx(bias[12:].tolist(), abs=1e-6)


def test_box_numbers_invert_the_decoding():
    gen = torch.Generator().manual_seed(0)
    t = torch.randn(50, 4, generator=gen)
    cell, anchor = torch.randint(0, 8, (50, 2), generator=gen).float(), torch.rand(50, 2, generator=gen) * 30 + 5
    box = decode(t, cell, anchor, 16, 1.5)
    assert torch.allclose(box_numbers(box, cell, anchor, 16, 1.5), t.sigmoid(), atol=1e-5)


def loop_dfl(bin_logits, wanted):
    """DFL one number at a time: u* sits between bins l and l + 1 (bin values i / (R - 1)); the loss is
    -((1 - w) log p_l + w log p_(l+1)) with w = u* (R - 1) - l, averaged over the 4 numbers."""
    terms = []
    for logits, targets in zip(bin_logits.tolist(), wanted.tolist()):
        r = len(logits) // 4
        total = 0.0
        for k in range(4):
            z = logits[k * r:(k + 1) * r]
            log_norm = math.log(sum(math.exp(v) for v in z))
            position = min(max(targets[k], 0.0), 1.0) * (r - 1)
            left = min(int(math.floor(position)), r - 2)
            w = position - left
            total -= (1 - w) * (z[left] - log_norm) + w * (z[left + 1] - log_norm)
        terms.append(total / 4)
    return terms


def test_distribution_focal_loss_equals_a_plain_loop_and_is_smallest_on_the_target():
    gen = torch.Generator().manual_seed(1)
    logits = torch.randn(20, 4 * 6, generator=gen)
    wanted = torch.rand(20, 4, generator=gen) * 1.2 - 0.1  # some outside [0, 1]: clipped to the end bins
    wanted[0] = torch.tensor([0.0, 1.0, 0.4, 0.6])          # on the first, last and an inner bin
    assert distribution_focal_loss(logits, wanted).tolist() == pytest.approx(loop_dfl(logits, wanted), abs=1e-5)
    # a distribution with all its mass on the two bins around u* (split as the weights say) beats any other
    u = torch.tensor([[0.3, 0.3, 0.3, 0.3]])  # between bins 1 (0.2) and 2 (0.4) of 6, half way
    best = torch.full((1, 24), -30.0)
    best.view(1, 4, 6)[..., 1:3] = 0.0
    assert distribution_focal_loss(best, u).item() == pytest.approx(math.log(2), abs=1e-4)  # the entropy of (1/2, 1/2)
    assert distribution_focal_loss(logits[:1], u).item() > math.log(2)


@pytest.mark.parametrize("seed", [0, 1])
def test_loss_with_bins_equals_the_plain_loop_plus_the_loop_dfl(seed):
    """The loss of yolo/loss.py with box bins: the plain-loop loss on the decoded (expected) boxes plus dfl_weight x
    the mean over positives of each positive's scale weight x its loop DFL."""
    from yolo.assign import assign

    bins, strategy = 5, "nearby_grid"
    anchors = [[(6, 6), (10, 8), (8, 12)], [(16, 16), (24, 18), (18, 26)], [(32, 32), (48, 40), (40, 56)]]
    cfg = tiny_config(img_size=64, label_assignment=strategy, box_loss="iou", ignore_iou_thres=0.3, box_bins=bins,
                      dfl_weight=0.7, box_scale_weights=(2.0, 1.0, 0.5), anchors=anchors)
    gen = torch.Generator().manual_seed(seed)
    head = YOLOHead([8, 8, 8], 3, cfg.num_classes, 64, (8, 16, 32), bins).train()
    features = [torch.randn(2, 8, 64 // s, 64 // s, generator=gen) for s in (8, 16, 32)]
    with torch.no_grad():
        outputs = head(features)
    c = cfg.num_classes
    assert [o.shape[-1] for o in outputs] == [5 + c + 4 * bins] * 3
    n = 5
    targets = torch.cat((torch.tensor([[0.0], [0], [1], [1], [1]]), torch.randint(0, 3, (n, 1), generator=gen).float(),
                         torch.rand(n, 2, generator=gen) * 56 + 4, torch.rand(n, 2, generator=gen) * 40 + 4), 1)
    decoding = BoxDecoding(torch.tensor(cfg.anchors, dtype=torch.float32), (8, 16, 32), REACH[strategy], bins)
    loss, items, _ = YOLOLoss(cfg)(outputs, targets, decoding)
    assignments, _ = assign(targets, decoding.anchors, [o.shape[2:4] for o in outputs], decoding.strides, strategy,
                            cfg.match_iou_thres, cfg.filter_by_max_iou, cfg.assign_unmatched_to_best,
                            torch.Generator().manual_seed(cfg.seed))
    plain, box, obj, cls = loop_loss([o[..., :5 + c] for o in outputs], targets.tolist(), assignments, cfg,
                                     cfg.anchors, (8, 16, 32), strategy)
    dfl_terms = []
    for s, (raw, asg) in enumerate(zip(outputs, assignments)):
        pos = raw[asg.batch, asg.anchor, asg.gy, asg.gx]
        cell = torch.stack((asg.gx, asg.gy), 1).float()
        wanted = box_numbers(targets[asg.gt, 2:6], cell, decoding.anchors[s][asg.anchor], decoding.strides[s], 1.5)
        dfl_terms += [cfg.box_scale_weights[s] * v for v in loop_dfl(pos[:, 5 + c:], wanted)]
    dfl = sum(dfl_terms) / len(dfl_terms)
    assert items["box"].item() == pytest.approx(box, abs=1e-5) and items["cls"].item() == pytest.approx(cls, abs=1e-5)
    assert items["dfl"].item() == pytest.approx(dfl, abs=1e-5)
    assert loss.item() == pytest.approx(plain + cfg.dfl_weight * dfl, abs=1e-4)


def test_the_loss_refuses_eval_outputs_of_a_model_with_bins():
    cfg = tiny_config(img_size=64, box_bins=4)
    model = build_model(cfg).eval()
    images, targets = fixed_batch(tiny_config(img_size=64))
    with torch.no_grad(), pytest.raises(ValueError, match="training-mode outputs"):
        YOLOLoss(cfg)(model(images), targets, model.decoding)


@pytest.mark.parametrize("kind", ["conv1x1", "tower3x3", "search", "searched"])
def test_every_head_kind_takes_bins_and_its_eval_outputs_are_its_training_outputs_without_the_bins(kind):
    from test_head_search import GENOTYPE

    torch.manual_seed(0)
    head = build_head(kind, [16, 24, 32], 3, 2, 64, (8, 16, 32), channels=8, narrow=4,
                      genotype=GENOTYPE if kind == "searched" else None, box_bins=6).eval()
    features = [torch.randn(2, c, 64 // s, 64 // s) for c, s in zip((16, 24, 32), (8, 16, 32))]
    predictor = head if isinstance(head, YOLOHead) else head.predict  # the prediction conv of a tower head
    with torch.no_grad():
        plain = head(features)
        predictor.train()  # only the prediction conv: the towers' norms keep computing the same numbers
        with_bins = head(features)
    for p, t in zip(plain, with_bins):
        assert p.shape[-1] == 5 + 2 and t.shape[-1] == 5 + 2 + 4 * 6
        assert torch.equal(p, t[..., :7])


def test_box_bins_of_one_is_refused():
    with pytest.raises(ValueError, match="box_bins"):
        apply_overrides(BaseConfig(), ["--box_bins", "1"]).finalize()


def test_a_model_with_bins_exports_with_parity(tmp_path):
    """The checkpoint says box_bins (a model field): export rebuilds that head, and ONNX Runtime computes what
    PyTorch computes (the expectation and its logit inside the graph), dynamic: another batch size and image size
    than the export traced."""
    args, model = two_task_checkpoint(tmp_path, ["--box_bins", "8"])
    assert model.heads[0].convs[0].out_channels == 3 * (4 * 8 + 1 + 3)
    command = args[:-2] + ["--export_dynamic", "true"]  # the command does not say box_bins
    path, _ = export.run(apply_overrides(BaseConfig(), command).finalize())
    onnx_model = OnnxModel(path)
    images = torch.randint(0, 256, (3, 3, 96, 128), dtype=torch.uint8)
    model.eval()
    with torch.no_grad():
        for task in (0, 1):
            expected, got = model(images, task=task), onnx_model(images, task=task)
            assert [g.shape for g in got] == [e.shape for e in expected]
            diffs, ok = outputs_close(expected, got, export.PARITY_TOL)
            assert ok, diffs


def test_the_nms_graph_of_a_model_with_bins_and_a_wider_reach_matches_pytorch(tmp_path):
    """--export_nms decodes inside the graph with the checkpoint's reach, on the expected values of the bins."""
    from test_export_nms import NMS, assert_same_detections

    args, model = two_task_checkpoint(tmp_path, ["--box_bins", "6", "--decode_reach", "2.5"])
    path, rows = export.run(apply_overrides(BaseConfig(), args[:-4] + NMS).finalize())
    assert all(r["unexplained"] == 0 for r in rows)
    cfg = apply_overrides(BaseConfig(), args + NMS).finalize()
    images = torch.randint(0, 256, (3, 3, 64, 64), dtype=torch.uint8)
    assert model.decoding.reach == 2.5 and assert_same_detections(model.eval(), OnnxModel(path), [images], cfg, 0) > 20


def test_a_model_with_bins_learns_one_batch():
    """Forty steps on one batch: the distribution focal loss and the box term fall, so the expected boxes move onto
    the GTs through the bins."""
    cfg = tiny_config(img_size=96, box_bins=8, lr=0.01, epochs=1)
    torch.manual_seed(0)
    model = build_model(cfg).train()
    images, targets = fixed_batch(tiny_config(img_size=96), n=2)
    loss_fn = YOLOLoss(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    first = None
    for _ in range(40):
        loss, items, _ = loss_fn(model(images), targets, model.decoding)
        first = first or {k: items[k].item() for k in ("box", "dfl")}
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert items["dfl"].item() < 0.7 * first["dfl"], (first, items["dfl"])
    assert items["box"].item() < 0.7 * first["box"], (first, items["box"])


def test_a_sure_distribution_stays_finite_under_low_precision_autocast():
    """All the mass on the last bin: u = 1 - eps, whose logit is finite in float32 but not if u is rounded in a
    16-bit type (1 - 1e-6 == 1 there): the head computes the expectation and its logit in float32."""
    head = YOLOHead([4], num_anchors=1, num_classes=1, img_size=64, strides=(8,), box_bins=4).eval()
    torch.nn.init.zeros_(head.convs[0].weight)
    bias = head.convs[0].bias.detach().clone()
    bias[:16] = torch.tensor([-30.0, -30.0, -30.0, 30.0]).repeat(4)
    head.convs[0].bias.data = bias
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out, = head([torch.zeros(1, 4, 2, 2)])
    assert torch.isfinite(out.float()).all() and (out[..., :4].float() > 10).all()
