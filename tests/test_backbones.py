import pytest
import torch
import torchvision
from torch import nn

from yolo.config_checks import BACKBONES
from yolo.models.backbones import build_backbone, darknet53_conv_shapes, scale_channels
from yolo.models.flops import count_params, gflops, model_info, model_summary

SIZES = [(320, 320), (416, 416), (320, 416)]


@pytest.mark.parametrize("width", [0.25, 0.5])
@pytest.mark.parametrize("name", BACKBONES)
def test_backbone_strides_and_channels(name, width):
    backbone = build_backbone(name, width).eval()
    assert len(backbone.out_channels) == 3
    for h, w in SIZES:
        with torch.no_grad():
            features = backbone(torch.randn(1, 3, h, w))
        assert isinstance(features, tuple) and len(features) == 3
        for feature, stride, channels in zip(features, (8, 16, 32), backbone.out_channels):
            assert feature.shape == (1, channels, h // stride, w // stride)


# Channel counts written down from the papers / torchvision, not computed by the code under test.
@pytest.mark.parametrize("name, width, expected", [
    ("darknet53", 1.0, (256, 512, 1024)),
    ("darknet53", 0.5, (128, 256, 512)),
    ("resnet18", 1.0, (128, 256, 512)),
    ("resnet34", 0.5, (64, 128, 256)),
    ("resnet50", 1.0, (512, 1024, 2048)),
    ("resnet50", 0.25, (128, 256, 512)),
    ("mobilenet_v3_small", 1.0, (24, 48, 576)),
    ("mobilenet_v3_large", 1.0, (40, 112, 960)),
])
def test_declared_channels(name, width, expected):
    assert build_backbone(name, width).out_channels == expected


def test_darknet53_has_52_convs_and_published_size():
    backbone = build_backbone("darknet53")
    convs = [m for m in backbone.modules() if isinstance(m, nn.Conv2d)]
    assert len(convs) == 52
    assert all(c.bias is None for c in convs)
    assert sum(c.stride == (2, 2) for c in convs) == 5
    # hand count: per conv k*k*in*out weights + 2*out BN params, over the paper's table
    expected = 3 * 3 * 3 * 32 + 2 * 32
    c_in = 32
    for c_out, blocks in [(64, 1), (128, 2), (256, 8), (512, 8), (1024, 4)]:
        expected += 9 * c_in * c_out + 2 * c_out
        expected += blocks * (c_out * (c_out // 2) + 2 * (c_out // 2) + 9 * (c_out // 2) * c_out + 2 * c_out)
        c_in = c_out
    assert count_params(backbone) == expected


@pytest.mark.parametrize("width", [1.0, 0.33])
def test_darknet53_conv_shapes_follow_the_module(width):
    # the darknet weight loader reads the file with these shapes, so they must list the convs in forward order
    convs = [m for m in build_backbone("darknet53", width).modules() if isinstance(m, nn.Conv2d)]
    assert darknet53_conv_shapes(width) == [(c.in_channels, c.out_channels, c.kernel_size[0]) for c in convs]


@pytest.mark.parametrize("name", ["resnet18", "resnet50"])
def test_resnet_matches_torchvision_layout(name):
    ours = build_backbone(name).state_dict()
    reference = getattr(torchvision.models, name)(weights=None).state_dict()
    reference = {k: v for k, v in reference.items() if not k.startswith("fc.")}
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in reference.items()}


def test_width_multiplier_scales_every_layer():
    assert scale_channels(64, 0.5) == 32 and scale_channels(64, 0.1) == 8 and scale_channels(100, 0.75) == 75
    full, half = build_backbone("resnet34", 1.0), build_backbone("resnet34", 0.5)
    for (key, a), (_, b) in zip(full.state_dict().items(), half.state_dict().items()):
        if a.dim() >= 1:
            assert b.shape[0] == a.shape[0] // 2, key


def test_unknown_name_lists_allowed_names():
    with pytest.raises(ValueError, match="resnet18.*mobilenet_v3_large"):
        build_backbone("vgg16")


# --- yolo.models.flops ------------------------------------------------------------------------------------------


class TinyDetector(nn.Module):
    """Stand-in with the detector's three attributes."""

    def __init__(self):
        super().__init__()
        self.backbone = nn.Conv2d(3, 8, 3, padding=1)          # 3*8*9 + 8 = 224 params
        self.neck = nn.Sequential(nn.Conv2d(8, 16, 1), nn.BatchNorm2d(16), nn.Conv2d(16, 16, 1))  # 144+32+272
        self.heads = nn.ModuleList([nn.Conv2d(16, 4, 1), nn.Conv2d(16, 4, 1)])  # 2 * 68

    def forward(self, x):
        x = self.neck(self.backbone(x))
        return [head(x) for head in self.heads]


def test_count_params_and_gflops_by_hand():
    model = TinyDetector()
    assert count_params(model) == 224 + 448 + 136
    h, w = 32, 48
    # FLOPs = 2 * multiply-adds of each conv (biases and BN not counted)
    expected = 2 * h * w * (3 * 8 * 9 + 8 * 16 + 16 * 16 + 2 * 16 * 4)
    assert gflops(model, (h, w)) == pytest.approx(expected / 1e9)
    assert model.training  # mode restored


def test_model_info_splits_parts():
    h, w = 16, 24
    info = model_info(TinyDetector(), (h, w))
    assert list(info) == ["backbone", "neck", "heads", "total"]  # nothing outside the three parts
    assert info["backbone"] == (224, pytest.approx(2 * h * w * 3 * 8 * 9 / 1e9))
    assert info["neck"] == (448, pytest.approx(2 * h * w * (8 * 16 + 16 * 16) / 1e9))
    assert info["heads"] == (136, pytest.approx(2 * h * w * 2 * 16 * 4 / 1e9))
    assert info["total"][0] == 808


def test_model_info_reports_work_outside_the_parts():
    class WithExtra(TinyDetector):
        def __init__(self):
            super().__init__()
            self.extra = nn.Linear(4, 4)  # 20 params, used in forward but not in backbone/neck/heads

        def forward(self, x):
            return self.extra(super().forward(x)[0].mean((2, 3)))

    info = model_info(WithExtra(), (8, 8))
    assert info["other"] == (20, pytest.approx(2 * 4 * 4 / 1e9))


def test_model_summary_is_a_markdown_table():
    text = model_summary(TinyDetector(), (256, 256))
    rows = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ")]
    assert rows == ["part", "backbone", "neck", "heads", "total"]
    assert "| total | 0.00 | 0.10 |" in text  # 808 params; 2*256*256*(216+128+256+128) = 0.0954e9 FLOPs


def test_gflops_of_resnet18_matches_known_value():
    # torchvision's resnet18 is 1.81 G multiply-adds at 224x224; without fc/avgpool that is ~3.63 GFLOPs
    assert gflops(build_backbone("resnet18"), (224, 224)) == pytest.approx(3.63, abs=0.02)
