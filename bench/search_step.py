"""What a cached head-search step costs: the search cell run edge by edge against its fused form, in one process.

    python bench/search_step.py [--config configs/my_config.py] [--batches 1,2,4] [--rounds 3] [--field value ...]

A cached search step (yolo/tasks/search_head.py) is an architecture step and a weight step on the towers alone:
two forwards and backwards of the search head on neck features. Its cells have 9 mixed edges, each two RepShare
chains of small convs, so a CPU spends its time on per-call overhead more than on arithmetic. SearchCell runs the
edges that read one state as one grouped computation (yolo/models/search_cell.py: fused_edges, tested equal to the
edge-by-edge loop, edge_by_edge); this bench times both on random features of the config's input size, in
interleaved rounds (loop, fused, loop, fused ...) so that the machine's drift hits both alike, and prints steps per
second and the ratio.
"""
import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from yolo.config import apply_overrides, load_config, task_configs  # noqa: E402
from yolo.loss import YOLOLoss  # noqa: E402
from yolo.models.detector import build_model  # noqa: E402
from yolo.models.search_cell import SearchCell, edge_by_edge  # noqa: E402
from yolo.research.head_search import HeadOnFeatures, alpha_step  # noqa: E402
from yolo.tasks.search_head import train_step  # noqa: E402

STEPS_PER_ROUND, WARMUP = 6, 2


def search_problem(cfg, batch):
    """(one search step as a function, a description): the config's search head on random neck features."""
    model = build_model(cfg, head="search")
    head = model.heads[0]
    net = HeadOnFeatures(head, model.decoding)
    alphas = head.architecture_parameters()
    weights = [p for p in net.parameters() if all(p is not a for a in alphas)]
    alpha_opt = torch.optim.Adam(alphas, cfg.search_alpha_lr)
    weight_opt = torch.optim.SGD(weights, 1e-3, momentum=0.9)
    loss_fn = YOLOLoss(task_configs(cfg)[0])
    p_channels = [conv.in_channels - 2 * cfg.head_channels for conv in head.predict.convs]
    features = [torch.randn(batch, c, cfg.img_size // s, cfg.img_size // s).contiguous(
        memory_format=torch.channels_last) for c, s in zip(p_channels, cfg.strides)]
    targets = torch.tensor([[b, 0, cfg.img_size / 2, cfg.img_size / 2, cfg.img_size / 4, cfg.img_size / 3]
                            for b in range(batch)])

    def loss_of(batch_):
        return loss_fn(net(batch_[0]), batch_[1], net.decoding)[0]

    def step():
        alpha_step(loss_of, (features, targets), (features, targets), alphas, weights, alpha_opt)
        train_step(net, loss_fn, features, targets, weight_opt, train=weights, frozen=alphas)
    return step


def steps_per_second(step, forward):
    """Steps per second of `step` with SearchCell.forward set to `forward` (restored after)."""
    fused = SearchCell.forward
    SearchCell.forward = forward
    try:
        for i in range(WARMUP + STEPS_PER_ROUND):
            if i == WARMUP:
                start = time.perf_counter()
            step()
    finally:
        SearchCell.forward = fused
    return STEPS_PER_ROUND / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/my_config.py")
    parser.add_argument("--batches", default="1,2,4", help="search_batch_size values to time")
    parser.add_argument("--rounds", type=int, default=3)
    args, overrides = parser.parse_known_args()
    cfg = apply_overrides(load_config(ROOT / args.config), overrides).finalize()
    print(f"{args.config}: {cfg.img_size} px, cell_channels {cfg.cell_channels}, {torch.get_num_threads()} threads; "
          f"steps/s (architecture + weight step), median of {args.rounds} interleaved rounds of {STEPS_PER_ROUND}")
    print("| batch | edge by edge | fused | fused / edge by edge |\n| ---: | ---: | ---: | ---: |")
    for batch in (int(b) for b in args.batches.split(",")):
        step = search_problem(cfg, batch)
        loop, fused = [], []
        for _ in range(args.rounds):
            loop.append(steps_per_second(step, edge_by_edge))
            fused.append(steps_per_second(step, SearchCell.forward))
        ratio = statistics.median(f / e for f, e in zip(fused, loop))
        print(f"| {batch} | {statistics.median(loop):.2f} | {statistics.median(fused):.2f} | {ratio:.2f} |")


if __name__ == "__main__":
    main()
