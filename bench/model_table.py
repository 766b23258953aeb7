"""Params and GFLOPs of the full detector for every backbone x width, as a markdown table.

    python bench/model_table.py                                  # 416 px, 20 classes (Pascal VOC)
    python bench/model_table.py --out ../notes/model_table.md    # also write the table to a file

"published params" holds the sizes a simplified YOLO implementation with the same backbones and width multiplier
publishes for its VOC detector (blank where it publishes none). Our neck is YOLOv3's (five-conv sets of 128/256/512 x
width channels), so compare the backbone column with the published one first: "published - our backbone" is what
that implementation spends on neck + heads if its backbone equals ours.
"""

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # run from anywhere without installing

from yolo.config import BaseConfig  # noqa: E402
from yolo.config_checks import BACKBONES  # noqa: E402
from yolo.models.detector import build_model  # noqa: E402
from bench.common import emit  # noqa: E402
from yolo.models.flops import model_info  # noqa: E402

WIDTHS = (0.25, 0.5, 0.75, 1.0)
VOC_CLASSES = ["aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor"]
# (backbone, width) -> params (M) published by a simplified YOLO implementation for its VOC detector
PUBLISHED_PARAMS_M = {
    ("resnet18", 0.25): 0.87, ("resnet18", 0.5): 3.46, ("resnet18", 0.75): 7.76, ("resnet18", 1.0): 13.78,
    ("resnet34", 0.75): 13.45,
    ("resnet50", 0.75): 36.49,
    ("darknet53", 0.25): 3.20, ("darknet53", 0.5): 12.76, ("darknet53", 0.75): 28.68, ("darknet53", 1.0): 50.94,
}


def detector_config(backbone, width, img_size):
    cfg = BaseConfig()
    cfg.backbone, cfg.width, cfg.img_size, cfg.class_names = backbone, width, img_size, VOC_CLASSES
    return cfg.finalize()


def measure(backbone, width, img_size):
    """{part: (params, GFLOPs)} for backbone, neck, heads and total of the VOC detector."""
    torch.manual_seed(0)
    return model_info(build_model(detector_config(backbone, width, img_size)), (img_size, img_size))


def table(img_size):
    lines = [f"Detector at {img_size}x{img_size}, {len(VOC_CLASSES)} classes (VOC), GFLOPs for one image "
             f"(1 multiply-add = 2 FLOPs)\n",
             "| backbone | width | params (M) | GFLOPs | backbone (M) | neck (M) | heads (M) "
             "| published params (M) | ours - published (M) | published - our backbone (M) |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for backbone in BACKBONES:
        for width in WIDTHS:
            info = measure(backbone, width, img_size)
            total_m, gflops = info["total"][0] / 1e6, info["total"][1]
            part_m = [info[part][0] / 1e6 for part in ("backbone", "neck", "heads")]
            published = PUBLISHED_PARAMS_M.get((backbone, width))
            # published - our backbone = its neck + heads, if its backbone matches ours (it does for ResNet-18)
            published_cells = ["", "", ""] if published is None else [f"{published:.2f}", f"{total_m - published:+.2f}",
                                                            f"{published - part_m[0]:.2f}"]
            cells = [backbone, f"{width}", f"{total_m:.2f}", f"{gflops:.2f}", *(f"{p:.2f}" for p in part_m),
                     *published_cells]
            lines.append("| " + " | ".join(cells) + " |")
            print(lines[-1], file=sys.stderr, flush=True)  # progress: the darknet rows take a few seconds each
    return "\n".join(lines)


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--img-size", type=int, default=416, help="square input side, a multiple of 32")
    parser.add_argument("--out", type=Path, default=None, help="also write the markdown table to this file")
    args = parser.parse_args()
    text = table(args.img_size)
    emit(text, args.out)


if __name__ == "__main__":
    main()
