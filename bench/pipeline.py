"""Is the model the bottleneck? images/s of the real training step vs bare forward+backward, measured in one run.

    python bench/pipeline.py [--config configs/my_config.py] [--rounds 6] [--iters 8] [--field value ...]

real  = the loader (decode, augment, collate) + assignment + loss + backward + clipping + optimizer step, as in
        training (one loader iterator, passes restarting as in an epoch loop)
bare  = forward + backward + clipping + optimizer step of the same model on a random batch of the same shape
The two are timed in interleaved rounds (bare, real, real, bare, bare, real, ...), and real / bare is taken per
round, so a machine that speeds up or slows down moves both sides of a ratio alike. Each block of steps starts with
one untimed step: the first step after a switch of sides is slower (caches, allocator), a cost training never
pays, and which side paid more of it moved the ratio by 0.05 depending on the order. Printed: the median ratio
with its spread, the same ratio from CPU process time per image (less sensitive to other processes on the
machine), and where the real step's time goes (waiting for the loader, forward, assignment + loss, backward +
step). Target: >= 0.85.
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

TARGET = 0.85


class Clock:
    """Accumulates wall time per named phase."""

    def __init__(self):
        self.total, self.last = {}, time.perf_counter()

    def lap(self, name):
        now = time.perf_counter()
        self.total[name] = self.total.get(name, 0.0) + now - self.last
        self.last = now


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/my_config.py")
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--max_seconds", type=float, default=90, help="no new round after this (at least 3 rounds)")
    parser.add_argument("--iters", type=int, default=8, help="steps per round and side")
    args, overrides = parser.parse_known_args()
    cfg = apply_overrides(load_config(args.config), overrides).finalize()
    model, loss_fn, batches, update = training_step_parts(cfg)
    clock = Clock()

    def real_step(batches):
        clock.lap("other")
        images, targets, *_ = next(batches)
        clock.lap("waiting for the loader")
        outputs = model(images)
        clock.lap("forward")
        loss, items, _ = loss_fn(outputs, targets, model.decoding)
        loss.item(), [v.item() for v in items.values()]  # the trainer logs them every step
        clock.lap("assignment + loss")
        update(loss)
        clock.lap("backward + step")

    random_images = torch.randint(0, 256, (cfg.batch_size, 3, cfg.img_size, cfg.img_size), dtype=torch.uint8)

    def bare_steps(n):
        for _ in range(n):
            update(sum(o.float().mean() for o in model(random_images)))

    def real_steps(n):
        for _ in range(n):
            real_step(batches)

    sides = {"bare": bare_steps, "real": real_steps}
    for steps in sides.values():  # warm-up: oneDNN picks its kernels
        steps(2)
    wall = {name: [] for name in sides}
    cpu = {name: [] for name in sides}
    clock.total.clear()
    start = time.perf_counter()
    while len(wall["real"]) < args.rounds and (len(wall["real"]) < 3 or time.perf_counter() - start < args.max_seconds):
        order = list(sides.items())
        for name, steps in order[::-1] if len(wall["real"]) % 2 else order:  # each side first every other round
            steps(1)  # untimed: the first step after a switch of sides pays for it (training never switches)
            w, c = time.perf_counter(), time.process_time()
            steps(args.iters)
            wall[name].append(time.perf_counter() - w)
            cpu[name].append(time.process_time() - c)

    images = args.iters * cfg.batch_size
    ratio = [b / r for b, r in zip(wall["bare"], wall["real"])]
    cpu_ratio = [b / r for b, r in zip(cpu["bare"], cpu["real"])]
    print(f"config {args.config} {' '.join(overrides)} | {cfg.backbone} x{cfg.width} | batch {cfg.batch_size} | "
          f"img {cfg.img_size} | workers {cfg.num_workers} | torch threads {torch.get_num_threads()} | "
          f"{len(wall['real'])} rounds of {args.iters} steps per side")
    print(f"bare forward+backward+step: {images / statistics.median(wall['bare']):7.1f} img/s "
          f"({1000 * statistics.median(cpu['bare']) / images:.1f} ms CPU per image)")
    print(f"real training step:         {images / statistics.median(wall['real']):7.1f} img/s "
          f"({1000 * statistics.median(cpu['real']) / images:.1f} ms CPU per image)")
    ok = "met" if statistics.median(ratio) >= TARGET else "NOT met"
    print(f"real / bare: {statistics.median(ratio):.3f} (min {min(ratio):.3f}, max {max(ratio):.3f}) "
          f"[target >= {TARGET}: {ok}] | CPU-time ratio {statistics.median(cpu_ratio):.3f}")
    steps = len(wall["real"]) * (args.iters + 1)  # the clock also ran during the untimed steps
    print("real step, ms per step: " + ", ".join(f"{k} {1000 * v / steps:.1f}" for k, v in clock.total.items()
                                                   if k != "other"))


if __name__ == "__main__":
    main()
