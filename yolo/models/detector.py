"""The detector: backbone -> YOLOv3 neck -> anchor heads, one head per task.

A single-task model is the one-task case of a multi-task one: the backbone is always shared, the neck blocks are
shared or copied per group of tasks as config `branching` says (yolo/models/neck.py), and every task has its own
head with its own number of classes.
"""
import torch
from torch import nn

from ..branching import neck_groups
from ..data.transforms import IMAGENET_MEAN, IMAGENET_STD
from .backbones import build_backbone
from .head import BoxDecoding, model_reach
from .heads import build_head
from .neck import YOLONeck


class Detector(nn.Module):
    def __init__(self, cfg, head=None):
        """head: the kind of head (yolo/models/heads.py build_head); None = config `head`."""
        super().__init__()
        num_tasks = len(cfg.task_num_classes)
        self.backbone = build_backbone(cfg.backbone, cfg.width)
        self.neck = YOLONeck(self.backbone.out_channels, cfg.width, neck_groups(cfg.branching, num_tasks),
                             cfg.neck_activation)
        self.heads = nn.ModuleList(
            build_head(head or cfg.head, self.neck.out_channels, len(cfg.anchors[0]), num_classes, cfg.img_size,
                       cfg.strides, cfg.head_channels, cfg.cell_channels, cfg.genotype,
                       genotype_source=cfg.genotype_file or "config field 'genotype'", box_bins=cfg.box_bins)
            for num_classes in cfg.task_num_classes)
        # anchors live in the state dict so a checkpoint carries the anchors it was trained with
        self.register_buffer("anchors", torch.tensor(cfg.anchors, dtype=torch.float32))  # (3, A, 2) pixels
        self.strides = tuple(cfg.strides)
        self.reach = model_reach(cfg)
        self.box_bins = cfg.box_bins
        # ImageNet statistics, applied inside the model so callers pass plain 0..255 images on any device
        self.register_buffer("mean", 255 * torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", 255 * torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    @property
    def num_tasks(self):
        return len(self.heads)

    @property
    def decoding(self):
        """The anchors, strides and reach that turn this model's raw outputs into boxes, and its box bins
        (yolo/models/head.py)."""
        return BoxDecoding(self.anchors, self.strides, self.reach, self.box_bins)

    def forward(self, images, task=0):
        """images: (B, 3, H, W) uint8 or float in 0..255, H and W multiples of 32.

        task=t    -> task t's raw logits [(B, A, H/8, W/8, 5+C), (B, A, H/16, W/16, 5+C), (B, A, H/32, W/32, 5+C)];
                     only the blocks on t's path run.
        task=None -> one such list per task, for the same images; shared blocks run once.
        images as a list with one batch per task (training: each task its own data) -> one list per task; a single
        call, so DDP sees every task's parameters used in one forward.
        With box_bins R, a model in training mode appends the 4 R bin logits: (B, A, H, W, 5 + C + 4 R), for the loss.
        """
        if isinstance(images, (list, tuple)):
            return [self.forward(batch, t) for t, batch in enumerate(images)]
        tasks = list(range(self.num_tasks)) if task is None else [task]
        outputs = [self.heads[t](p) for t, p in zip(tasks, self.pyramids(images, tasks))]
        return outputs if task is None else outputs[0]

    def pyramids(self, images, tasks):
        """What the heads of `tasks` read: for each task the neck's outputs [P3, P4, P5] of the images (the head
        search caches them)."""
        x = ((images.to(self.mean.dtype) - self.mean) / self.std).contiguous(memory_format=torch.channels_last)
        return self.neck(self.backbone(x), tasks)

    def tasks_sharing(self):
        """(parameter, number of tasks that use it) for every parameter used by more than one task."""
        shared = [(p, self.num_tasks) for p in self.backbone.parameters()]
        for copies, block_groups in zip(self.neck.blocks, self.neck.groups):
            shared += [(p, len(group)) for copy, group in zip(copies, block_groups) for p in copy.parameters()]
        return [(p, n) for p, n in shared if n > 1]

    def shared_layers(self):
        """The shared layers in forward order: the backbone (always the first; a single-task model's only one), then
        every neck block copy that more than one task runs."""
        return [self.backbone] + [copy for copies, block_groups in zip(self.neck.blocks, self.neck.groups)
                                  for copy, group in zip(copies, block_groups) if len(group) > 1]


def build_model(cfg, head=None):
    # channels-last (NHWC) lets oneDNN / cuDNN pick their fastest convolutions: 1.4x faster training on CPU here
    return Detector(cfg, head).to(memory_format=torch.channels_last)
