"""Is the model the bottleneck? images/s of the real training step vs bare forward+backward, measured in one run.

    python bench/pipeline.py [--config configs/my_config.py] [--iters 20] [--num_workers N] [--field value ...]

real  = the loader (decode, augment, collate) + assignment + loss + backward + optimizer step, as in training
bare  = forward + backward + optimizer step of the same model on a random batch of the same shape
Prints both and real / bare (target >= 0.85 with the default config).
"""
import argparse
import os
import sys
import time

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from yolo.config import apply_overrides, load_config  # noqa: E402
from yolo.data.dataset import build_loader, read_records  # noqa: E402
from yolo.loss import YOLOLoss  # noqa: E402
from yolo.models.detector import build_model  # noqa: E402


def timed_steps(step, batches, iters, warmup=3):
    for _ in range(warmup):
        step(*next(batches))
    start = time.perf_counter()
    for _ in range(iters):
        step(*next(batches))
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/my_config.py")
    parser.add_argument("--iters", type=int, default=20)
    args, overrides = parser.parse_known_args()
    cfg = apply_overrides(load_config(args.config), overrides).finalize()
    torch.manual_seed(0)
    model = build_model(cfg).train()
    loss_fn = YOLOLoss(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    loader = build_loader(cfg, read_records(cfg, "train"), train=True)

    def real_step(images, targets, _):
        loss, _, _ = loss_fn(model(images), targets, model.anchors)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def bare_step(images):
        loss = sum(o.float().mean() for o in model(images))
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    def endless_loader():
        while True:
            yield from loader

    random_images = torch.randint(0, 256, (cfg.batch_size, 3, cfg.img_size, cfg.img_size), dtype=torch.uint8)
    images_per_run = args.iters * cfg.batch_size
    bare = images_per_run / timed_steps(bare_step, iter(lambda: (random_images,), None), args.iters)
    real = images_per_run / timed_steps(real_step, endless_loader(), args.iters)
    print(f"config {args.config} {' '.join(overrides)} | batch {cfg.batch_size} | img {cfg.img_size} | "
          f"workers {cfg.num_workers} | torch threads {torch.get_num_threads()}")
    print(f"bare forward+backward: {bare:7.1f} img/s")
    print(f"real training step:    {real:7.1f} img/s")
    print(f"real / bare:           {real / bare:7.3f}  (target >= 0.85)")


if __name__ == "__main__":
    main()
