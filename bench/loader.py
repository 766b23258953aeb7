"""Is the data loader the bottleneck? Loader throughput against what the training step consumes, in one run.

    python bench/loader.py [--config configs/my_config.py] [--batches 40] [--steps 10] [--field value ...]

loader      images/s the training loader delivers (decode, letterbox, augment, collate) with the config's
            num_workers, iterated on its own after a warm-up batch (the workers' start-up is not counted)
albumentations  the same with the albumentations list that draws what the default LetterboxAugment draws
            (LetterboxAugment's speed-up, as a ratio; only when the config uses the default, augmentations = None)
heavy       the same with PHOTO_AUGMENTATIONS and mosaic_prob 0.5 (the real-data configs' pipeline), for reference
train step  images/s of forward + loss + backward + optimizer step of the configured model at its batch size,
            on a real batch held in memory (no loading)
The loader is not the bottleneck when loader / train step > 1. On a machine where workers and the training step
share the same few cores, both numbers are measured alone; a real run splits the cores between them.
"""
import argparse
import copy
import os
import sys
import time

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import torch  # noqa: E402

from yolo.config import apply_overrides, load_config  # noqa: E402
from yolo.data.dataset import build_loader, read_records  # noqa: E402
from yolo.data.transforms import PHOTO_AUGMENTATIONS, build_transform  # noqa: E402
from yolo.loss import YOLOLoss  # noqa: E402
from yolo.models.detector import build_model  # noqa: E402


def albumentations_equivalent(transform):
    """The albumentations list that draws what a LetterboxAugment draws: flip, zoom, shift, colour jitter."""
    j = transform.color_jitter
    return [("HorizontalFlip", transform.hflip_prob, {}),
            ("Affine", 1.0, {"scale": transform.scale,
                             "translate_percent": (-transform.translate, transform.translate)}),
            ("ColorJitter", transform.color_prob,
             {"brightness": j, "contrast": j, "saturation": j, "hue": transform.hue})]


def loader_images_per_s(cfg, records, batches):
    loader = build_loader(cfg, records, train=True)
    it = iter(loader)
    next(it)  # workers start and fill their prefetch queues
    start, seen = time.perf_counter(), 0
    for _ in range(batches):
        try:
            images, *_ = next(it)
        except StopIteration:
            it = iter(loader)
            images, *_ = next(it)
        seen += len(images)
    return seen / (time.perf_counter() - start)


def train_step_images_per_s(cfg, records, steps, warmup=2):
    torch.manual_seed(0)
    model = build_model(cfg).train()
    loss_fn = YOLOLoss(cfg)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    single = copy.copy(cfg)
    single.num_workers = 0
    images, targets, *_ = next(iter(build_loader(single, records, train=True)))

    def step():
        loss, _, _ = loss_fn(model(images), targets, model.decoding)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    start = time.perf_counter()
    for _ in range(steps):
        step()
    return steps * len(images) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/my_config.py")
    parser.add_argument("--batches", type=int, default=40, help="loader batches timed")
    parser.add_argument("--steps", type=int, default=10, help="training steps timed")
    args, overrides = parser.parse_known_args()
    cfg = apply_overrides(load_config(args.config), overrides).finalize()
    records = read_records(cfg, "train")
    heavy = copy.copy(cfg)
    heavy.augmentations, heavy.mosaic_prob = PHOTO_AUGMENTATIONS, 0.5

    loader = loader_images_per_s(cfg, records, args.batches)
    loader_heavy = loader_images_per_s(heavy, records, args.batches)
    step = train_step_images_per_s(cfg, records, args.steps)
    print(f"{cfg.backbone} x{cfg.width}, img_size {cfg.img_size}, batch {cfg.batch_size}, {cfg.num_workers} workers, "
          f"torch threads {torch.get_num_threads()}, {os.cpu_count()} CPUs")
    print(f"loader (config pipeline)        {loader:8.1f} images/s")
    if cfg.augmentations is None:
        same = copy.copy(cfg)
        same.augmentations = albumentations_equivalent(build_transform(cfg, train=True))
        loader_same = loader_images_per_s(same, records, args.batches)
        print(f"loader (albumentations, same)   {loader_same:8.1f} images/s: LetterboxAugment is "
              f"{loader / loader_same:.1f}x faster")
    print(f"loader (PHOTO_AUGMENTATIONS + mosaic 0.5) {loader_heavy:8.1f} images/s")
    print(f"train step (fwd+loss+bwd+opt)   {step:8.1f} images/s")
    print(f"loader / train step = {loader / step:.2f}: the loader is "
          f"{'not ' if loader > step else ''}the bottleneck (heavy pipeline: {loader_heavy / step:.2f})")


if __name__ == "__main__":
    main()
