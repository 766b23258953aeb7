"""`python main.py --task info`: what the configured detector is made of, without data or a checkpoint.

Prints params and GFLOPs split into backbone / neck / heads, the numbered neck blocks (the multi-task branching
grammar refers to them by index) and the anchors of each scale with the grid they are laid on.
"""
from loguru import logger
from torch import nn

from ..models.detector import build_model
from ..models.info import count_params, model_summary
from ..models.neck import NECK_BLOCK_NAMES
from .logs import setup_logging


def run_info(cfg):
    """Build the model of `cfg`, log its description and return it as text."""
    setup_logging()
    model = build_model(cfg)
    text = describe_model(model, cfg)
    logger.info("\n" + text)
    return text


def describe_model(model, cfg):
    size = (cfg.img_size, cfg.img_size)
    header = (f"{cfg.backbone} x{cfg.width}, {cfg.num_classes} classes, {cfg.img_size}x{cfg.img_size} input: "
              f"{count_params(model):,} params")
    sections = [header, model_summary(model, size), neck_table(model.neck), anchor_table(cfg)]
    return "\n\n".join(sections)


def neck_table(neck):
    lines = ["neck blocks (index -> name):", "| # | block | out channels | params |", "|---:|---|---:|---:|"]
    for index, (name, block) in enumerate(zip(NECK_BLOCK_NAMES, neck.blocks)):
        lines.append(f"| {index} | {name} | {last_conv(block).out_channels} | {count_params(block):,} |")
    return "\n".join(lines)


def last_conv(block):
    # a block ends with its last conv, possibly followed by BN, activation or upsampling, which keep the channels
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    return convs[-1]


def anchor_table(cfg):
    lines = ["anchors (w, h in pixels at the input size):", "| stride | grid | anchors |", "|---:|---|---|"]
    for stride, anchors in zip(cfg.strides, cfg.anchors):
        grid = cfg.img_size // stride
        wh = ", ".join(f"{w}x{h}" for w, h in anchors)
        lines.append(f"| {stride} | {grid}x{grid} | {wh} |")
    return "\n".join(lines)
