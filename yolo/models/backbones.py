"""Detector backbones: Darknet-53, ResNet-18/34/50 and MobileNetV3-small/large.

Every backbone maps an image batch (B, 3, H, W) to three feature maps (c3, c4, c5) at strides 8, 16 and 32,
i.e. (B, C3, H/8, W/8), (B, C4, H/16, W/16), (B, C5, H/32, W/32), and declares `out_channels = (C3, C4, C5)`.
H and W must be multiples of 32.

Width multiplier: every layer's channel count c becomes `scale_channels(c, width) = max(8, int(c * width))`
(MobileNetV3 uses torchvision's own `width_mult`, which rounds to multiples of 8). Each layer of a slim network
therefore has the *leading* channels of the matching full-width layer, which is what lets
`yolo.models.weights` initialise a slim network from full-width pretrained weights by slicing.
"""

from torch import nn
from torchvision.models import mobilenet_v3_large, mobilenet_v3_small
from torchvision.models.resnet import BasicBlock, Bottleneck

from ..config_checks import BACKBONES


def scale_channels(channels: int, width: float) -> int:
    """Channel count of a layer after the width multiplier (never below 8, so tiny widths still work)."""
    return max(8, int(channels * width))


def build_backbone(name: str, width: float = 1.0) -> nn.Module:
    """Backbone by name; forward(x) returns (c3, c4, c5) at strides 8/16/32, see module docstring."""
    if width <= 0:
        raise ValueError(f"backbone width must be > 0, got {width}")
    if name == "darknet53":
        return Darknet53(width)
    if name in RESNET_LAYOUTS:
        return ResNet(name, width)
    if name in ("mobilenet_v3_small", "mobilenet_v3_large"):
        return MobileNetV3(name, width)
    raise ValueError(f"unknown backbone {name!r}; allowed names: {', '.join(BACKBONES)}")


# ----------------------------------------------------------------------------------------------------------------
# Darknet-53 (YOLOv3 paper): 52 convs = stem + 5 downsampling convs + 2 per residual block (1+2+8+8+4 = 23 blocks)

DARKNET53_STAGES = ((64, 1), (128, 2), (256, 8), (512, 8), (1024, 4))  # (output channels, residual blocks)


def darknet53_conv_shapes(width: float = 1.0) -> list[tuple[int, int, int]]:
    """(in_channels, out_channels, kernel) of every Darknet-53 conv, in forward order (= darknet file order).

    Mirrors Darknet53 below; the weight loader uses it (at width 1.0) for the tensor shapes stored in a darknet file.
    """
    shapes = [(3, scale_channels(32, width), 3)]
    for channels, num_blocks in DARKNET53_STAGES:
        c_in, c_out, hidden = shapes[-1][1], scale_channels(channels, width), scale_channels(channels // 2, width)
        shapes.append((c_in, c_out, 3))  # stride-2 downsampling conv
        for _ in range(num_blocks):
            shapes += [(c_out, hidden, 1), (hidden, c_out, 3)]
    return shapes


class ConvBNLeaky(nn.Module):
    """Darknet's conv layer: Conv (no bias, BN provides it) + BatchNorm + LeakyReLU(0.1)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int = 1):
        super().__init__()
        self.conv = nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(c_out)
        self.act = nn.LeakyReLU(0.1, inplace=True)

    def forward(self, x):
        return self.act(self.bn(self.conv(x)))


class DarknetResidual(nn.Module):
    """1x1 conv halving the channels, 3x3 conv restoring them, plus the identity shortcut."""

    def __init__(self, channels: int, hidden: int):
        super().__init__()
        self.cv1 = ConvBNLeaky(channels, hidden, 1)
        self.cv2 = ConvBNLeaky(hidden, channels, 3)

    def forward(self, x):
        return x + self.cv2(self.cv1(x))


class Darknet53(nn.Module):
    def __init__(self, width: float = 1.0):
        super().__init__()
        self.width = width
        channels = scale_channels(32, width)
        self.stem = ConvBNLeaky(3, channels, 3)
        stages = []
        for stage_channels, num_blocks in DARKNET53_STAGES:
            c_out, hidden = scale_channels(stage_channels, width), scale_channels(stage_channels // 2, width)
            blocks = [DarknetResidual(c_out, hidden) for _ in range(num_blocks)]
            stages.append(nn.Sequential(ConvBNLeaky(channels, c_out, 3, stride=2), *blocks))
            channels = c_out
        self.stages = nn.ModuleList(stages)  # strides 2, 4, 8, 16, 32
        self.out_channels = tuple(scale_channels(c, width) for c, _ in DARKNET53_STAGES[2:])

    def forward(self, x):
        x = self.stem(x)
        features = []
        for stage in self.stages:
            x = stage(x)
            features.append(x)
        return tuple(features[2:])  # c3, c4, c5


# ----------------------------------------------------------------------------------------------------------------
# ResNet built from torchvision's blocks; attribute names follow torchvision (conv1, bn1, layer1..layer4, with
# downsample.0/.1 inside blocks) so a torchvision state_dict loads key for key (its fc.* is simply not used).

RESNET_LAYOUTS = {"resnet18": (BasicBlock, (2, 2, 2, 2)),
                  "resnet34": (BasicBlock, (3, 4, 6, 3)),
                  "resnet50": (Bottleneck, (3, 4, 6, 3))}


class ResNet(nn.Module):
    def __init__(self, name: str, width: float = 1.0):
        super().__init__()
        block, blocks_per_layer = RESNET_LAYOUTS[name]
        self.width = width
        stem = scale_channels(64, width)
        self.conv1 = nn.Conv2d(3, stem, kernel_size=7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(stem)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)  # stride 4 after the stem
        channels = stem
        layers = []
        for i, (planes, num_blocks) in enumerate(zip((64, 128, 256, 512), blocks_per_layer)):
            planes = scale_channels(planes, width)
            stride = 1 if i == 0 else 2
            layer, channels = self._make_layer(block, channels, planes, num_blocks, stride)
            layers.append(layer)
        self.layer1, self.layer2, self.layer3, self.layer4 = layers  # strides 4, 8, 16, 32
        self.out_channels = tuple(scale_channels(p, width) * block.expansion for p in (128, 256, 512))
        self._init_weights()

    @staticmethod
    def _make_layer(block, c_in: int, planes: int, num_blocks: int, stride: int):
        c_out = planes * block.expansion
        downsample = None
        if stride != 1 or c_in != c_out:  # the shortcut must change shape too: 1x1 conv + BN, as torchvision
            downsample = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))
        blocks = [block(c_in, planes, stride, downsample)]
        blocks += [block(c_out, planes) for _ in range(num_blocks - 1)]
        return nn.Sequential(*blocks), c_out

    def _init_weights(self):
        # Same initialisation torchvision's ResNet uses when trained from scratch.
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        c2 = self.layer1(x)
        c3 = self.layer2(c2)
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        return c3, c4, c5


# ----------------------------------------------------------------------------------------------------------------
# MobileNetV3: torchvision's `features` (keys stay "features.N...", so its state_dict loads), cut after the last
# block at each of strides 8, 16 and 32. c5 includes the final 1x1 expansion conv, as torchvision's detectors do.


class MobileNetV3(nn.Module):
    def __init__(self, name: str, width: float = 1.0):
        super().__init__()
        builder = mobilenet_v3_small if name == "mobilenet_v3_small" else mobilenet_v3_large
        self.width = width
        self.features = builder(weights=None, width_mult=width).features
        self.taps = self._last_block_at_strides(self.features, (8, 16, 32))
        self.out_channels = tuple(self._out_channels(self.features[i]) for i in self.taps)

    @staticmethod
    def _last_block_at_strides(features: nn.Sequential, strides) -> tuple[int, ...]:
        """Index of the last block whose output has each of the given strides (from the convs' own strides)."""
        last_index, stride = {}, 1
        for i, block in enumerate(features):
            for m in block.modules():
                if isinstance(m, nn.Conv2d):
                    stride *= m.stride[0]
            last_index[stride] = i
        return tuple(last_index[s] for s in strides)

    @staticmethod
    def _out_channels(block: nn.Module) -> int:
        convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
        return convs[-1].out_channels

    def forward(self, x):
        outputs = []
        for i, block in enumerate(self.features):
            x = block(x)
            if i in self.taps:
                outputs.append(x)
        return tuple(outputs)
