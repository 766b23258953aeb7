"""Does post-processing keep up? images/s of forward + decode + NMS vs bare forward, measured in one run.

    python bench/predict.py [--config configs/my_config.py] [--ckpt runs/shapes/best.pt] [--iters 20] [--field value ...]

With a trained checkpoint the NMS sees realistic detections; without one (random weights) the score threshold
keeps few boxes, so pass --ckpt for honest numbers. Target: with / without >= 0.9.
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
from yolo.engine.checkpoint import load_checkpoint  # noqa: E402
from yolo.models.detector import build_model  # noqa: E402
from yolo.postprocess import postprocess  # noqa: E402


@torch.no_grad()
def images_per_second(fn, batches, repeats):
    fn(batches[0])
    start = time.perf_counter()
    for _ in range(repeats):
        for images in batches:
            fn(images)
    return repeats * sum(len(b) for b in batches) / (time.perf_counter() - start)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default="configs/my_config.py")
    parser.add_argument("--ckpt", default=None)
    parser.add_argument("--batches", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    args, overrides = parser.parse_known_args()
    cfg = apply_overrides(load_config(args.config), overrides).finalize()
    model = build_model(cfg)
    if args.ckpt:
        model.load_state_dict(load_checkpoint(args.ckpt)["model"])
    model.eval()
    loader = build_loader(cfg, read_records(cfg, "val"), train=False)
    batches = [images for (images, _, _), _ in zip(loader, range(args.batches))]

    def with_postprocess(images):
        postprocess(model(images), model.anchors, cfg.strides, cfg.label_assignment, cfg.conf_thres, cfg.nms_iou,
                    cfg.max_det)

    bare = images_per_second(model, batches, args.repeats)
    full = images_per_second(with_postprocess, batches, args.repeats)
    print(f"batch {cfg.batch_size} | img {cfg.img_size} | conf_thres {cfg.conf_thres} | ckpt {args.ckpt}")
    print(f"bare forward:                {bare:7.1f} img/s")
    print(f"forward + decode + NMS:      {full:7.1f} img/s")
    print(f"with / without post-process: {full / bare:7.3f}  (target >= 0.9)")


if __name__ == "__main__":
    main()
