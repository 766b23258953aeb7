"""Looking at the data: `python main.py --task check` (what is in the dataset, and everything wrong with it) and
`python main.py --task show_batch` (augmented training batches drawn with their boxes and class names).

check reads both splits with the loaders' own readers and rules (checks.py), but collects every problem, fatal
ones included, and decodes every image completely. It logs, per split: images (with boxes / background), boxes per
class, boxes per image, box sizes, and every problem with its file name; it writes <runs_dir>/check/problems.txt
(one problem per line) and <runs_dir>/check/<split>_data.png (class counts, boxes per image, box-size histogram
after letterboxing to img_size with the configured anchors marked).
"""
import copy
from collections import Counter
from itertools import islice
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from loguru import logger
from PIL import Image

from ..viz import draw_detections
from .checks import PROBLEM_KINDS, DataError, Problems
from .dataset import build_loader, read_records
from .transforms import letterbox_params

SHOWN_PER_KIND = 50  # problems of one kind listed in the log; problems.txt has them all


def run_check(cfg, out_dir=None):
    """Scan the train and val splits; log the report, write problems.txt and the figures. Returns
    {split: (records, problems)}."""
    out_dir = Path(out_dir or Path(cfg.runs_dir) / "check")
    out_dir.mkdir(parents=True, exist_ok=True)
    results = {split: scan_split(cfg, split) for split in ("train", "val")}
    lines = []
    for split, (records, problems) in results.items():
        logger.info(split_report(records, problems, cfg, split))
        if records:
            plot_split(records, cfg, split, out_dir / f"{split}_data.png")
        lines += [f"{split}\t{p.kind}\t{p.file}\t{p.detail}" for p in problems.items]
    (out_dir / "problems.txt").write_text("split\tkind\tfile\tdetail\n" + "".join(line + "\n" for line in lines))
    fatal = sum(p.kind == "fatal" for _, problems in results.values() for p in problems.items)
    verdict = f"{fatal} fatal: training would stop" if fatal else "training would start"
    logger.info(f"check done: {len(lines)} problems, {verdict}; report in {out_dir} (problems.txt, *_data.png)")
    return results


def scan_split(cfg, split):
    """(records, problems) of one split, read with every check on; a fatal problem becomes a 'fatal' entry."""
    problems = Problems(f"{cfg.dataset} [{split}]", show_per_kind=0, decode_images=True)
    try:
        records = read_records(cfg, split, problems)
    except DataError as e:  # includes DataFileNotFound
        problems.add("fatal", cfg.data_root, str(e))
        return [], problems
    reason = problems.fatal_reason(len(records))
    if reason:
        problems.add("fatal", cfg.data_root, reason)
    return records, problems


def split_report(records, problems, cfg, split):
    """The text report of one split."""
    names = list(cfg.class_names)
    boxes_per_image = np.array([int((~r.difficult).sum()) for r in records], dtype=np.int64)
    labels = np.concatenate([r.labels[~r.difficult] for r in records]) if records else np.zeros(0, np.int64)
    ignored = sum(int(r.difficult.sum()) for r in records)
    images_of_class = Counter(c for r in records for c in set(r.labels[~r.difficult].tolist()))
    header = (f"---- {split}: {len(records)} images ({int((boxes_per_image > 0).sum())} with boxes, "
              f"{int((boxes_per_image == 0).sum())} background), {len(labels)} boxes + {ignored} difficult/crowd "
              f"(ignored)")
    lines = [header, f"{'class':<24}{'boxes':>8}{'images':>8}"]
    counts = np.bincount(labels, minlength=len(names))
    for c, name in enumerate(names):
        lines.append(f"{name:<24}{counts[c]:>8}{images_of_class[c]:>8}" + ("   <- no boxes" if counts[c] == 0 else ""))
    if len(records):
        lines.append(f"boxes per image: mean {boxes_per_image.mean():.2f}, median {np.median(boxes_per_image):.0f}, "
                     f"max {boxes_per_image.max()}")
        sides = np.sqrt(np.prod(letterboxed_box_sizes(records, cfg.img_size), axis=1))
        if len(sides):
            q = np.percentile(sides, [5, 25, 50, 75, 95])
            lines.append(f"box side sqrt(w*h) at img_size {cfg.img_size}: 5/25/50/75/95 % = "
                         + " / ".join(f"{v:.0f}" for v in q) + f" px; {int((sides < 8).sum())} boxes under 8 px")
    lines.append(f"problems: {len(problems.items)}" + ("" if not problems.items else ", " + ", ".join(
        f"{n} {kind} ({PROBLEM_KINDS[kind]})" for kind, n in problems.count.most_common())))
    for kind in problems.count:
        of_kind = [p for p in problems.items if p.kind == kind]
        lines += [f"  [{kind}] {p.file}: {p.detail}" for p in of_kind[:SHOWN_PER_KIND]]
        if len(of_kind) > SHOWN_PER_KIND:
            lines.append(f"  [{kind}] ... {len(of_kind) - SHOWN_PER_KIND} more in problems.txt")
    return "\n".join(lines)


def letterboxed_box_sizes(records, img_size) -> np.ndarray:
    """(N, 2) width and height of every non-difficult box after letterboxing its image to img_size."""
    sizes = []
    for r in records:
        sx, sy, _, _ = letterbox_params(r.width, r.height, img_size)
        boxes = r.boxes[~r.difficult].astype(np.float64)
        sizes.append(np.stack(((boxes[:, 2] - boxes[:, 0]) * sx, (boxes[:, 3] - boxes[:, 1]) * sy), 1))
    return np.concatenate(sizes) if sizes else np.zeros((0, 2))


def plot_split(records, cfg, split, path):
    """Class counts, boxes per image, and the box-size histogram with the anchors of each scale marked."""
    fig, axes = plt.subplots(1, 3, figsize=(16, 4.2))
    names = list(cfg.class_names)
    labels = np.concatenate([r.labels[~r.difficult] for r in records])
    counts = np.bincount(labels, minlength=len(names))
    axes[0].bar(range(len(names)), counts, color="tab:blue")
    axes[0].set(title=f"{split}: boxes per class", ylabel="boxes")
    axes[0].set_xticks(range(len(names)), names, rotation=90, fontsize=max(4, 9 - len(names) // 12))
    per_image = [int((~r.difficult).sum()) for r in records]
    axes[1].hist(per_image, bins=np.arange(max(per_image) + 2) - 0.5, color="tab:green")
    axes[1].set(title="boxes per image", xlabel="boxes", ylabel="images")
    sides = np.sqrt(np.prod(letterboxed_box_sizes(records, cfg.img_size), axis=1))
    if len(sides):
        low = max(sides.min(), 1.0)
        bins = np.geomspace(low, max(sides.max(), 2 * low), 40)
        axes[2].hist(sides, bins=bins, color="grey")
    for scale, (colour, anchors) in enumerate(zip(("tab:red", "tab:orange", "tab:purple"), cfg.anchors)):
        for k, (w, h) in enumerate(anchors):
            axes[2].axvline(np.sqrt(w * h), color=colour, ls="--", lw=1,
                            label=f"anchors stride {cfg.strides[scale]}" if k == 0 else None)
    axes[2].set(xscale="log", title=f"box size after letterbox to {cfg.img_size}", xlabel="sqrt(w*h) px",
                ylabel="boxes")
    axes[2].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


# ------------------------------------------------------------------------------------------- batch pictures


def run_show_batch(cfg, out_dir=None):
    """Save num_debug_batch grids of augmented training images (mosaic included) with their boxes and class names
    to <runs_dir>/batches/train_batch<k>.jpg. Returns the paths."""
    out_dir = Path(out_dir or Path(cfg.runs_dir) / "batches")
    out_dir.mkdir(parents=True, exist_ok=True)
    cfg = copy.copy(cfg)
    cfg.num_workers = 0  # in-process: one seed gives the same pictures every time
    loader = build_loader(cfg, read_records(cfg, "train"), train=True)
    loader.dataset.transform.set_random_seed(cfg.seed)
    paths = []
    for k, (images, targets, _) in enumerate(islice(loader, cfg.num_debug_batch)):
        paths.append(out_dir / f"train_batch{k}.jpg")
        batch_grid(images, targets, cfg.class_names).save(paths[-1], quality=90)
        logger.info(f"{paths[-1]}: {len(images)} images, {len(targets)} boxes")
    return paths


def batch_grid(images, targets, class_names, columns=None, gap=4):
    """images (B, 3, S, S) uint8 tensor, targets (N, 6) batch, class, cx, cy, w, h -> one PIL image, B tiles."""
    count, side = len(images), images.shape[-1]
    columns = columns or int(np.ceil(np.sqrt(count)))
    rows = int(np.ceil(count / columns))
    grid = Image.new("RGB", (columns * (side + gap) - gap, rows * (side + gap) - gap), (255, 255, 255))
    targets = targets.numpy()
    for i in range(count):
        mine = targets[targets[:, 0] == i]
        xyxy = np.concatenate((mine[:, 2:4] - mine[:, 4:6] / 2, mine[:, 2:4] + mine[:, 4:6] / 2), 1)
        tile = draw_detections(images[i].permute(1, 2, 0).numpy(), xyxy, mine[:, 1].astype(int), class_names)
        grid.paste(tile, ((i % columns) * (side + gap), (i // columns) * (side + gap)))
    return grid
