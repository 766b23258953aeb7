"""The detector: backbone -> YOLOv3 neck -> anchor heads."""
import torch
from torch import nn

from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from .backbones import build_backbone
from .head import YOLOHead
from .neck import YOLONeck


class Detector(nn.Module):
    def __init__(self, cfg):
        super().__init__()
        self.backbone = build_backbone(cfg.backbone, cfg.width)
        self.neck = YOLONeck(self.backbone.out_channels, cfg.width)
        self.heads = YOLOHead(self.neck.out_channels, len(cfg.anchors[0]), cfg.num_classes, cfg.img_size,
                              cfg.strides)
        # anchors live in the state dict so a checkpoint carries the anchors it was trained with
        self.register_buffer("anchors", torch.tensor(cfg.anchors, dtype=torch.float32))  # (3, A, 2) pixels
        # ImageNet statistics, applied inside the model so callers pass plain 0..255 images on any device
        self.register_buffer("mean", 255 * torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", 255 * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def forward(self, images):
        """images: (B, 3, H, W) uint8 or float in 0..255, H and W multiples of 32.

        Returns [(B, A, H/8, W/8, 5+C), (B, A, H/16, W/16, 5+C), (B, A, H/32, W/32, 5+C)] raw logits.
        """
        x = ((images.to(self.mean.dtype) - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        return self.heads(self.neck(self.backbone(x)))


def build_model(cfg):
    # channels-last (NHWC) lets oneDNN / cuDNN pick their fastest convolutions: 1.4x faster training on CPU here
    return Detector(cfg).to(memory_format=torch.channels_last)
