"""Where does the real training step lose time against the bare one? A breakdown of bench/pipeline.py's sides.

    python bench/profile_pipeline.py [--config configs/my_config.py] [--rounds 6] [--iters 4] [--torch_profile]

Sides, timed in interleaved rounds (bare, real, loader alone, loss alone, bare, ...), each block after one untimed
step, as ms per step, median over the rounds:
  bare          forward + backward + step on a random batch (bench/pipeline.py's denominator)
  real          loader + assignment + loss + backward + step (bench/pipeline.py's numerator)
  loader alone  one batch from the loader (decode, augment, collate), nothing else
  loss alone    assignment + loss forward and backward to the outputs, on a stored batch and stored outputs
real - bare should be about loader alone + loss alone; --torch_profile also prints torch.profiler's op table for
the loss alone (which operators it spends its time in).
"""
import argparse
import os
import statistics
import sys
import time

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from bench.common import training_step_parts  # noqa: E402
from yolo.config import apply_overrides, load_config  # noqa: E402


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/my_config.py")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--iters", type=int, default=4, help="steps per round and side")
    parser.add_argument("--torch_profile", action="store_true")
    args, overrides = parser.parse_known_args()
    cfg = apply_overrides(load_config(args.config), overrides).finalize()
    model, loss_fn, batches, update = training_step_parts(cfg)

    def real(batches):
        images, targets, *_ = next(batches)
        loss, items, _ = loss_fn(model(images), targets, model.decoding)
        loss.item(), [v.item() for v in items.values()]
        update(loss)

    random_images = torch.randint(0, 256, (cfg.batch_size, 3, cfg.img_size, cfg.img_size), dtype=torch.uint8)
    images, targets, *_ = next(batches)
    stored = [o.detach() for o in model(images)]

    def loss_alone():
        outputs = [o.clone().requires_grad_() for o in stored]
        loss, items, _ = loss_fn(outputs, targets, model.decoding)
        loss.item(), [v.item() for v in items.values()]
        loss.backward()

    sides = {"bare": lambda: update(sum(o.float().mean() for o in model(random_images))),
             "real": lambda: real(batches),
             "loader alone": lambda: next(batches),
             "loss alone": loss_alone}
    for fn in sides.values():
        fn(), fn()
    ms = {name: [] for name in sides}
    for _ in range(args.rounds):
        for name, fn in sides.items():
            fn()  # untimed: the first step after a switch of sides is slower (see bench/pipeline.py)
            start = time.perf_counter()
            for _ in range(args.iters):
                fn()
            ms[name].append(1000 * (time.perf_counter() - start) / args.iters)
    print(f"{cfg.backbone} x{cfg.width} | batch {cfg.batch_size} | img {cfg.img_size} | torch threads "
          f"{torch.get_num_threads()} | {args.rounds} rounds of {args.iters} steps")
    for name, values in ms.items():
        print(f"{name:13s} {statistics.median(values):7.1f} ms/step (min {min(values):.1f}, max {max(values):.1f})")
    ratio = [b / r for b, r in zip(ms["bare"], ms["real"])]
    print(f"bare / real: median {statistics.median(ratio):.3f} (min {min(ratio):.3f}, max {max(ratio):.3f})")
    if args.torch_profile:
        from torch.profiler import profile
        with profile() as prof:
            for _ in range(args.iters):
                loss_alone()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=20))


if __name__ == "__main__":
    main()
