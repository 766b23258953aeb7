"""Cost of the label assignment next to the model's forward + backward pass, per strategy, on the same batch.

    python bench/assign.py                          # batch 16, 416 px, 50 GTs per image, default model
    python bench/assign.py --device cuda --runs 20  # on a GPU (times are synchronized)
    python bench/assign.py --profile all_grid       # plus a torch.profiler table of where assign's time goes

Assignment time = median over --runs calls of yolo.assign.assign (after --warmup untimed ones); fwd+bwd = median
of model(images) + backward of a stand-in loss (the real loss would count the assignment twice). The target for a
strategy is assign / (fwd+bwd) <= 0.05, i.e. at most 5 % of a training step spent choosing positives.
On a busy machine (other processes on the same cores) times are noisy: compare only numbers from one run.
"""
import argparse
import math
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from yolo.assign import STRATEGIES, assign  # noqa: E402
from yolo.config import BaseConfig  # noqa: E402
from yolo.models.detector import build_model  # noqa: E402

TARGET_RATIO = 0.05


def random_targets(batch, per_image, img_size, num_classes, generator):
    """(B * per_image, 6) realistic boxes: sizes log-uniform in 2..60 % of the image side, aspect about 1:2..2:1,
    inside the image."""
    n = batch * per_image
    log_size = torch.empty(n).uniform_(math.log(0.02), math.log(0.6), generator=generator)
    size = img_size * log_size.exp()
    aspect = torch.empty(n).uniform_(-0.7, 0.7, generator=generator).exp()
    w, h = (size * aspect.sqrt()).clamp(max=img_size), (size / aspect.sqrt()).clamp(max=img_size)
    cx = w / 2 + torch.rand(n, generator=generator) * (img_size - w)
    cy = h / 2 + torch.rand(n, generator=generator) * (img_size - h)
    image = torch.arange(batch).repeat_interleave(per_image).float()
    label = torch.randint(num_classes, (n,), generator=generator).float()
    return torch.stack((image, label, cx, cy, w, h), 1)


def median_ms(fn, runs, warmup, device):
    times = []
    for i in range(warmup + runs):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        if i >= warmup:
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--img-size", type=int, default=416)
    parser.add_argument("--gts", type=int, default=50, help="GT boxes per image")
    parser.add_argument("--runs", type=int, default=7, help="timed assign calls per strategy")
    parser.add_argument("--model-runs", type=int, default=3, help="timed forward + backward passes")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    parser.add_argument("--profile", choices=STRATEGIES, default=None, help="profile assign for this strategy")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)

    cfg = BaseConfig()
    cfg.img_size = args.img_size
    cfg.finalize()
    model = build_model(cfg).to(device).train()
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (args.batch, 3, args.img_size, args.img_size), generator=gen,
                           dtype=torch.uint8).to(device)
    targets = random_targets(args.batch, args.gts, args.img_size, cfg.num_classes, gen).to(device)
    anchors = torch.tensor(cfg.anchors, dtype=torch.float32, device=device)
    grid_sizes = [(args.img_size // s, args.img_size // s) for s in cfg.strides]

    def fwd_bwd():
        model.zero_grad(set_to_none=True)
        outputs = model(images)
        sum(o.float().square().mean() for o in outputs).backward()

    def assign_with(strategy):
        return lambda: assign(targets, anchors, grid_sizes, cfg.strides, strategy, cfg.match_iou_thres,
                              cfg.filter_by_max_iou, cfg.assign_unmatched_to_best)

    model_ms = median_ms(fwd_bwd, args.model_runs, args.warmup, device)
    print(f"device {device}, torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch}, "
          f"{args.img_size} px, {args.gts} GTs per image ({len(targets)} in all); model {cfg.backbone} width "
          f"{cfg.width}: forward + backward {model_ms:.1f} ms (median of {args.model_runs})\n")
    print(f"| strategy | assign (ms, median of {args.runs}) | positives | pos per GT | assign / (fwd+bwd) | "
          f"<= {TARGET_RATIO} |")
    print("|---|---:|---:|---:|---:|:---:|")
    for strategy in STRATEGIES:
        ms = median_ms(assign_with(strategy), args.runs, args.warmup, device)
        result, stats = assign_with(strategy)()
        ratio = ms / model_ms
        print(f"| {strategy} | {ms:.1f} | {sum(len(r.gt) for r in result)} | {stats['pos_per_gt']:.1f} | "
              f"{ratio:.4f} | {'yes' if ratio <= TARGET_RATIO else 'NO'} |", flush=True)

    if args.profile:
        from torch.profiler import ProfilerActivity, profile
        activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=activities) as prof:
            assign_with(args.profile)()
        print(f"\nprofile of assign({args.profile}):")
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))


if __name__ == "__main__":
    main()
