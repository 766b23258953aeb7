"""`python main.py --task info`: what the configured detector is made of, without data or a checkpoint.

Prints params and GFLOPs split into backbone / neck / heads, the CPU ms per image, the numbered neck blocks (the
multi-task branching grammar refers to them by index) with the tasks sharing each copy, the params shared vs owned by
each task, and the anchors of each scale with the grid they are laid on.
"""
import torch
from loguru import logger
from torch import nn

from ..branching import NECK_BLOCK_NAMES
from ..config import task_configs
from ..engine.logs import setup_logging
from ..models.detector import build_model
from ..models.flops import count_params, model_summary, ms_per_image

TIMING_BATCH, TIMING_ROUNDS = 8, 5


def run(cfg):
    """Build the model of `cfg`, log its description and return it as text."""
    setup_logging()
    model = build_model(cfg)
    text = describe_model(model, cfg)
    logger.info("\n" + text)
    return text


def describe_model(model, cfg):
    size = (cfg.img_size, cfg.img_size)
    tasks = task_configs(cfg)
    classes = ", ".join(f"{t.task_name}: {t.num_classes}" for t in tasks) if len(tasks) > 1 else cfg.num_classes
    header = (f"{cfg.backbone} x{cfg.width}, {classes} classes, {cfg.img_size}x{cfg.img_size} input, "
              f"{head_description(cfg)}: {count_params(model):,} params")
    sections = [header, model_summary(model, size) + "\n" + speed_line(model, cfg),
                neck_table(model.neck, cfg.task_names)]
    if len(tasks) > 1:
        sections.append(task_params_table(model, cfg.task_names))
    return "\n\n".join(sections + [anchor_table(cfg)])


def speed_line(model, cfg):
    """CPU ms per image of the whole model (every task's head, shared blocks once), as heads are compared with it:
    the ops' latency on this machine, which GFLOPs do not tell (depthwise and dilated convs cost more per FLOP)."""
    images = torch.randint(0, 256, (TIMING_BATCH, 3, cfg.img_size, cfg.img_size), dtype=torch.uint8)
    ms = ms_per_image([model.cpu()], images, TIMING_ROUNDS, task=None)[0]
    return (f"CPU {ms:.1f} ms per image (batch {TIMING_BATCH}, {torch.get_num_threads()} threads, the median of "
            f"{TIMING_ROUNDS} forwards)")


def head_description(cfg):
    """Which head (config `head`); tower heads add their widths, a searched head its genotype lines."""
    if cfg.head == "conv1x1":
        return "head conv1x1"
    text = f"head {cfg.head} ({cfg.head_channels} channels"
    if cfg.head == "searched":
        lines = [line for line in cfg.genotype.splitlines() if line.strip() and not line.startswith("#")]
        return text + f", edges at {cfg.cell_channels}; genotype of {cfg.genotype_file}:\n  " + "\n  ".join(lines) + ")"
    return text + ")"


def neck_table(neck, task_names):
    """One row per neck block; with several tasks, the groups of tasks sharing each copy (the branching tree)."""
    several = len(task_names) > 1
    lines = ["neck blocks (index -> name)" + (": one copy per group of tasks, [a, b] = tasks sharing a copy" if several
                                               else ":"),
             "| # | block | out channels | params per copy |" + (" copies |" if several else ""),
             "|---:|---|---:|---:|" + ("---|" if several else "")]
    for index, (name, copies, groups) in enumerate(zip(NECK_BLOCK_NAMES, neck.blocks, neck.groups)):
        row = f"| {index} | {name} | {last_conv(copies[0]).out_channels} | {count_params(copies[0]):,} |"
        if several:
            row += " " + " ".join("[" + ", ".join(task_names[t] for t in group) + "]" for group in groups) + " |"
        lines.append(row)
    return "\n".join(lines)


def task_params_table(model, task_names):
    """Params each task uses, split into those shared with every task, with some, and its own."""
    num_tasks = len(task_names)
    shared = {id(p): n for p, n in model.tasks_sharing()}
    lines = ["params per task:", "| task | shared by all | shared by some | own (neck copies + head) | total used |",
             "|---|---:|---:|---:|---:|"]
    for task, name in enumerate(task_names):
        used = list(model.backbone.parameters()) + list(model.heads[task].parameters())
        used += [p for j, copies in enumerate(model.neck.blocks) for p in copies[model.neck.routes[task][j]].parameters()]
        counts = [0, 0, 0]
        for p in used:
            n = shared.get(id(p), 1)
            counts[0 if n == num_tasks else 1 if n > 1 else 2] += p.numel()
        lines.append(f"| {name} | {counts[0]:,} | {counts[1]:,} | {counts[2]:,} | {sum(counts):,} |")
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
