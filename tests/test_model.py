import pytest
import torch

from yolo.config import BaseConfig
from yolo.models.detector import build_model
from yolo.models.head import decode_boxes


def small_config(**fields):
    cfg = BaseConfig()
    cfg.width = 0.25
    for k, v in fields.items():
        setattr(cfg, k, v)
    return cfg.finalize()


@pytest.mark.parametrize("h, w", [(320, 320), (416, 416), (320, 416)])
def test_output_shapes(h, w):
    cfg = small_config(class_names=["a", "b", "c", "d", "e"])
    model = build_model(cfg).eval()
    with torch.no_grad():
        outputs = model(torch.randint(0, 255, (2, 3, h, w), dtype=torch.uint8))
    assert [tuple(o.shape) for o in outputs] == [(2, 3, h // s, w // s, 5 + 5) for s in (8, 16, 32)]


def test_width_height_decode_is_bounded_and_positive():
    anchors = torch.tensor([[10.0, 20.0], [30.0, 15.0]])
    raw = torch.tensor([-1e4, 1e4, 0.0, 50.0]).repeat(1, 2, 3, 4, 1)  # (1, A=2, H=3, W=4, 4)
    raw[..., 2:4] = torch.tensor([[-1e4, 1e4]])
    boxes = decode_boxes(raw, anchors, stride=8, reach=1.5)
    wh = boxes[..., 2:]
    assert torch.isfinite(boxes).all() and (wh >= 0).all()
    assert (wh <= 4 * anchors.view(1, 2, 1, 1, 2) + 1e-4).all()
    # centre offsets stay within (-1, 2) cells around the cell for nearby_grid's reach
    cells_x = torch.arange(4).view(1, 1, 1, 4).float()
    assert (boxes[..., 0] / 8 - cells_x >= -1 - 1e-5).all() and (boxes[..., 0] / 8 - cells_x <= 2 + 1e-5).all()


def test_zero_logits_decode_to_anchor_at_cell_centre():
    anchors = torch.tensor([[10.0, 20.0]])
    boxes = decode_boxes(torch.zeros(1, 1, 2, 3, 4), anchors, stride=16, reach=0.5)
    assert torch.allclose(boxes[0, 0, 1, 2], torch.tensor([(2 + 0.5) * 16, (1 + 0.5) * 16, 10.0, 20.0]))


def test_neck_activation_is_the_one_configured_and_changes_the_output():
    """Every neck nonlinearity is the configured one (the backbone keeps its own), and with the same weights the
    SiLU neck computes something else than the LeakyReLU one: the activation is really in the forward path."""
    kinds = {"leaky": torch.nn.LeakyReLU, "silu": torch.nn.SiLU, "relu": torch.nn.ReLU}
    models = {}
    for name, kind in kinds.items():
        torch.manual_seed(0)
        models[name] = build_model(small_config(neck_activation=name)).eval()
        acts = [type(m) for m in models[name].neck.modules() if type(m) in kinds.values()]
        assert len(acts) == 3 * 5 + 3 + 2 and set(acts) == {kind}  # 3 conv sets, 3 outs, 2 ups
    assert [type(m) for m in models["silu"].backbone.modules() if type(m) in kinds.values()] == \
           [type(m) for m in models["leaky"].backbone.modules() if type(m) in kinds.values()]
    models["silu"].load_state_dict(models["leaky"].state_dict())  # no parameters of their own: same keys
    x = torch.randint(0, 255, (1, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        leaky, silu = models["leaky"](x)[0], models["silu"](x)[0]
    assert leaky.abs().max() > 0 and not torch.allclose(leaky, silu, atol=1e-3)


def test_unknown_neck_activation_is_refused_by_name():
    with pytest.raises(ValueError, match="neck_activation.*mish"):
        small_config(neck_activation="mish")
