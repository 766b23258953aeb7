"""Model size and cost: parameter counts, GFLOPs, a backbone / neck / heads summary, and CPU ms per image.

GFLOPs are counted by torch.utils.flop_counter.FlopCounterMode for the forward pass of ONE image, with one
multiply-add counted as 2 FLOPs (convs and matmuls only; BN, activations and elementwise ops are not counted).
"""
import statistics
import time

import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

DETECTOR_PARTS = ("backbone", "neck", "heads")


def count_params(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def gflops(model: nn.Module, img_size: tuple[int, int]) -> float:
    """GFLOPs of model(x) for one (1, 3, H, W) image, img_size = (H, W)."""
    counter = _count_flops(model, img_size)
    return counter.get_total_flops() / 1e9


def model_info(model: nn.Module, img_size: tuple[int, int]) -> dict[str, tuple[int, float]]:
    """{part: (params, GFLOPs)} for backbone, neck, heads, "other" (only if non-zero) and "total"."""
    counter = _count_flops(model, img_size)
    per_module = {name: sum(ops.values()) for name, ops in counter.get_flop_counts().items()}
    root = type(model).__name__  # FlopCounterMode names modules "<RootClass>.<attribute path>"
    info = {part: (count_params(getattr(model, part)), _flops_under(per_module, f"{root}.{part}"))
            for part in DETECTOR_PARTS}
    total_params, total_flops = count_params(model), counter.get_total_flops()
    other_params = total_params - sum(params for params, _ in info.values())
    other_flops = total_flops - sum(flops for _, flops in info.values())
    if other_params or other_flops:  # layers or matmuls outside the three parts, e.g. in the detector's forward
        info["other"] = (other_params, other_flops)
    info["total"] = (total_params, total_flops)
    return {part: (params, flops / 1e9) for part, (params, flops) in info.items()}


@torch.inference_mode()
def ms_per_image(models, x, rounds=9, **forward_kwargs) -> list[float]:
    """The median wall time (ms) per image of `model(x, **forward_kwargs)` for each of `models` (eval mode), x a
    batch (B, ...). One warm-up call each (oneDNN picks its kernels on the first), then `rounds` rounds in which the
    models take turns, the order reversed every other round: a machine whose speed drifts moves all of them alike,
    so their ratios hold even when the absolute times do not."""
    models = [m.eval() for m in models]
    for model in models:
        model(x, **forward_kwargs)
    times = [[] for _ in models]
    for r in range(rounds):
        for i in (range(len(models)) if r % 2 == 0 else reversed(range(len(models)))):
            start = time.perf_counter()
            models[i](x, **forward_kwargs)
            times[i].append(1000 * (time.perf_counter() - start) / len(x))
    return [statistics.median(t) for t in times]


def model_summary(model: nn.Module, img_size: tuple[int, int]) -> str:
    """Markdown table of params (M) and GFLOPs split into model.backbone / model.neck / model.heads."""
    lines = [f"input {img_size[0]}x{img_size[1]} (H x W), one image",
             "| part | params (M) | GFLOPs |", "|---|---:|---:|"]
    lines += [f"| {part} | {params / 1e6:.2f} | {flops:.2f} |"
              for part, (params, flops) in model_info(model, img_size).items()]
    return "\n".join(lines)


def _count_flops(model: nn.Module, img_size: tuple[int, int]) -> FlopCounterMode:
    # eval mode so BatchNorm running statistics are not changed by the dummy image; the mode is restored after
    was_training = model.training
    first_param = next(model.parameters(), None)
    device = first_param.device if first_param is not None else torch.device("cpu")
    x = torch.zeros(1, 3, *img_size, device=device)
    model.eval()
    try:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            model(x, task=None) if getattr(model, "num_tasks", 1) > 1 else model(x)  # every task's head
    finally:
        model.train(was_training)
    return counter


def _flops_under(per_module: dict[str, int], prefix: str) -> int:
    """FLOPs of the module at `prefix` and its descendants, counting each FLOP once.

    A container that is never called itself (nn.ModuleList of heads) has no entry, only its children do; nested
    modules each have an entry, so only the outermost entries under the prefix are summed.
    """
    names = [n for n in per_module if n == prefix or n.startswith(prefix + ".")]
    outermost = [n for n in names if not any(n.startswith(other + ".") for other in names)]
    return sum(per_module[n] for n in outermost)


def flops_under(model: nn.Module, img_size: tuple[int, int], prefixes) -> dict[str, float]:
    """GFLOPs of one image's forward spent in each submodule of `prefixes` (attribute paths, e.g. "neck.blocks.3.0"),
    counted once per call of the module: a neck copy shared by several tasks runs once."""
    per_module = {name: sum(ops.values()) for name, ops in _count_flops(model, img_size).get_flop_counts().items()}
    root = type(model).__name__
    return {prefix: _flops_under(per_module, f"{root}.{prefix}") / 1e9 for prefix in prefixes}
