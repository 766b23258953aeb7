"""CPU forward time of each backbone, printed as a markdown table.

    python bench/backbones.py                                  # all backbones, width 0.5, 416 px, batch 1 and 8
    python bench/backbones.py --backbones resnet18 darknet53 --widths 0.5 1.0 --runs 5

Time = median over --runs forward passes (after --warmup untimed ones) in eval mode under torch.inference_mode.
GFLOPs are for one image (yolo.models.flops.gflops).
On a busy machine (other processes on the same cores) multi-threaded runs stall at every parallel region and
batch-1 times can jump 10-20x; use --threads 1, or compare only numbers taken on an idle machine.
"""

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from yolo.config_checks import BACKBONES  # noqa: E402
from yolo.models.backbones import build_backbone  # noqa: E402
from yolo.models.flops import count_params, gflops  # noqa: E402


def median_forward_ms(model, x, runs: int, warmup: int) -> float:
    times = []
    with torch.inference_mode():
        for i in range(warmup + runs):
            start = time.perf_counter()
            model(x)
            if i >= warmup:
                times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backbones", nargs="+", default=list(BACKBONES), choices=BACKBONES)
    parser.add_argument("--widths", nargs="+", type=float, default=[0.5])
    parser.add_argument("--batch-sizes", nargs="+", type=int, default=[1, 8])
    parser.add_argument("--img-size", type=int, default=416, help="square input side, a multiple of 32")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    size = args.img_size

    print(f"CPU forward, {size}x{size}, torch {torch.__version__}, {torch.get_num_threads()} threads, "
          f"median of {args.runs} runs after {args.warmup} warm-up\n")
    batch_columns = " | ".join(f"batch {b} (ms)" for b in args.batch_sizes)
    print(f"| backbone | width | params (M) | GFLOPs/img | out channels | {batch_columns} |")
    print("|---|---:|---:|---:|---|" + "---:|" * len(args.batch_sizes))
    for name in args.backbones:
        for width in args.widths:
            torch.manual_seed(0)
            model = build_backbone(name, width).eval()
            times = [median_forward_ms(model, torch.randn(b, 3, size, size), args.runs, args.warmup)
                     for b in args.batch_sizes]
            time_columns = " | ".join(f"{t:.1f}" for t in times)
            print(f"| {name} | {width:g} | {count_params(model) / 1e6:.2f} | {gflops(model, (size, size)):.2f} | "
                  f"{model.out_channels} | {time_columns} |", flush=True)


if __name__ == "__main__":
    main()
