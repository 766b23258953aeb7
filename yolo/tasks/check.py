"""`python main.py --task check`: what is in the dataset, and everything wrong with it.

It reads both splits with the loaders' own readers and rules (checks.py), but collects every problem, fatal
ones included, and decodes every image completely. It logs, per split: images (with boxes / background), boxes per
class, boxes per image, box sizes, and every problem with its file name; it writes <runs_dir>/check/problems.txt
(one problem per line) and <runs_dir>/check/<split>_data.png (class counts, boxes per image, box-size histogram
after letterboxing to img_size with the configured anchors marked). A check that finds check/ taken writes to
check2/, check3/ ..., so a report never sits beside the figures of an earlier one.
"""
from collections import Counter
from pathlib import Path

import numpy as np
from loguru import logger

from ..data.checks import PROBLEM_KINDS, DataError, Problems
from ..data.dataset import read_records
from ..data.shapes import NotGenerated
from ..data.transforms import letterboxed_box_sizes
from ..engine.folders import next_free_dir
from ..engine.logs import setup_logging
from ..viz.plots import plot_split
from . import for_each_task

SHOWN_PER_KIND = 50  # problems of one kind listed in the log; problems.txt has them all


def run(cfg):
    """Check every task's dataset (see check_dataset). Returns their results, one per task."""
    setup_logging()
    return for_each_task(cfg, check_dataset, "check")


def check_dataset(cfg, out_dir=None):
    """Scan the train and val splits; log the report, write problems.txt and the figures. Returns
    {split: (records, problems)}."""
    out_dir = Path(out_dir) if out_dir else next_free_dir(Path(cfg.runs_dir) / "check")
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
        records = read_records(cfg, split, problems, generate=False)
    except NotGenerated:  # the built-in data not there yet: training would generate it, so no problem of the data
        raise
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
        sizes = letterboxed_box_sizes(records, cfg.img_size)  # (N, 2) width, height in pixels at img_size
        sides = np.sqrt(np.prod(sizes, axis=1))
        if len(sides):
            q = np.percentile(sides, [5, 25, 50, 75, 95])
            lines.append(f"box side sqrt(w*h) at img_size {cfg.img_size}: 5/25/50/75/95 % = "
                         + " / ".join(f"{v:.0f}" for v in q) + f" px; {int((sides < 8).sum())} boxes under 8 px")
            lines.append(too_small_line(sizes, cfg))
    lines.append(f"problems: {len(problems.items)}" + ("" if not problems.items else ", " + ", ".join(
        f"{n} {kind} ({PROBLEM_KINDS[kind]})" for kind, n in problems.count.most_common())))
    for kind in problems.count:
        of_kind = [p for p in problems.items if p.kind == kind]
        lines += [f"  [{kind}] {p.file}: {p.detail}" for p in of_kind[:SHOWN_PER_KIND]]
        if len(of_kind) > SHOWN_PER_KIND:
            lines.append(f"  [{kind}] ... {len(of_kind) - SHOWN_PER_KIND} more in problems.txt")
    return "\n".join(lines)


def too_small_line(sizes, cfg):
    """sizes: (N, 2) box widths and heights after letterboxing to img_size (letterboxed_box_sizes). How many boxes
    training would drop before any augmentation: a side under min_box_size pixels at img_size (the augmentation's
    own filter; zooming out and mosaics drop more, counted per epoch as boxes_dropped_pct in metrics.csv). A dataset
    of tiny objects must not lose them unseen."""
    small = int((sizes.min(axis=1) < cfg.min_box_size).sum()) if len(sizes) else 0
    line = (f"{small} of {len(sizes)} boxes ({100 * small / max(len(sizes), 1):.1f} %) have a side under "
            f"min_box_size = {cfg.min_box_size:g} px at img_size {cfg.img_size}: training drops them")
    if small:
        line += "; raise img_size or lower min_box_size to keep them"
    return line
