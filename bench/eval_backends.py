"""Time pycocotools vs faster-coco-eval on the same random, realistic detections.

    python bench/eval_backends.py [--images 500 --classes 20 --dets 100 --seed 0]

Prints each backend's wall time, the max abs difference of the 12 COCO stats and the speed ratio.
"""

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from yolo.config_checks import EVAL_BACKENDS  # noqa: E402
from yolo.metrics import evaluate_detections  # noqa: E402


def random_detections(num_images, num_classes, dets_per_image, seed, width=640, height=480):
    """GTs of COCO-like sizes; a detector-like output: most GTs found with jitter and high scores,
    plus low-score clutter (duplicates, wrong classes, background) up to ~dets_per_image per image."""
    rng = np.random.default_rng(seed)
    gt_boxes, gt_labels, gt_ignore, det_boxes, det_scores, det_labels = [], [], [], [], [], []
    for _ in range(num_images):
        n = rng.integers(0, 16)
        wh = np.exp(rng.uniform(np.log(8), np.log(400), size=(n, 2)))
        xy = rng.uniform(0, 1, size=(n, 2)) * np.maximum(np.array([width, height]) - wh, 1)
        boxes = np.concatenate([xy, xy + wh], axis=1)
        labels = rng.integers(0, num_classes, size=n)
        gt_boxes.append(boxes)
        gt_labels.append(labels)
        gt_ignore.append(rng.random(n) < 0.05)

        found = rng.random(n) < 0.85
        size = np.tile(wh[found], 2)
        hits = boxes[found] + rng.normal(0, 0.07, size=size.shape) * size
        hit_scores = rng.beta(5, 2, size=len(hits))
        hit_labels = np.where(rng.random(len(hits)) < 0.9, labels[found], rng.integers(0, num_classes, len(hits)))

        num_clutter = max(dets_per_image - len(hits), 0)
        centers = rng.uniform([0, 0], [width, height], size=(num_clutter, 2))
        clutter_wh = np.exp(rng.uniform(np.log(8), np.log(300), size=(num_clutter, 2)))
        clutter = np.concatenate([centers - clutter_wh / 2, centers + clutter_wh / 2], axis=1)
        clutter_scores = rng.beta(1, 6, size=num_clutter)
        clutter_labels = rng.integers(0, num_classes, size=num_clutter)

        dets = np.concatenate([hits, clutter]).clip(0, [width, height, width, height])
        dets[:, 2:] = np.maximum(dets[:, 2:], dets[:, :2] + 1)
        order = rng.permutation(len(dets))
        det_boxes.append(dets[order].astype(np.float32))
        det_scores.append(np.concatenate([hit_scores, clutter_scores])[order].astype(np.float32))
        det_labels.append(np.concatenate([hit_labels, clutter_labels])[order].astype(np.int64))
    sizes = [(width, height)] * num_images
    return gt_boxes, gt_labels, gt_ignore, sizes, det_boxes, det_scores, det_labels


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--images", type=int, default=500)
    parser.add_argument("--classes", type=int, default=20)
    parser.add_argument("--dets", type=int, default=100, help="detections per image (approx.)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    data = random_detections(args.images, args.classes, args.dets, args.seed)
    class_names = [f"class{k}" for k in range(args.classes)]
    num_dets = sum(len(d) for d in data[4])
    num_gts = sum(len(g) for g in data[0])
    print(f"{args.images} images, {args.classes} classes, {num_gts} GTs, {num_dets} detections")

    results, seconds = {}, {}
    for backend in EVAL_BACKENDS:
        start = time.perf_counter()
        results[backend] = evaluate_detections(*data, class_names, backend=backend)
        seconds[backend] = time.perf_counter() - start
        print(f"{backend:<17} {seconds[backend]:7.2f} s   mAP {results[backend].map:.4f}   "
              f"AP50 {results[backend].map50:.4f}")

    slow, fast = (results[b] for b in EVAL_BACKENDS)
    max_diff = np.abs(np.array(slow.stats) - np.array(fast.stats)).max()
    ap50_diff = max(abs(slow.per_class_ap50[c] - fast.per_class_ap50[c]) for c in class_names)
    print(f"max |diff| of the 12 stats: {max_diff:.2e}   max |diff| per-class AP50: {ap50_diff:.2e}")
    print(f"speed-up faster_coco_eval vs pycocotools: {seconds['pycocotools'] / seconds['faster_coco_eval']:.1f}x")
    print()
    print(fast.table)


if __name__ == "__main__":
    main()
