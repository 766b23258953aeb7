"""Logging: loguru to the console (through tqdm, so bars stay intact) and the run's log file; metrics.csv;
optional TensorBoard event files."""
import csv
import math
import sys
from pathlib import Path

from loguru import logger
from tqdm import tqdm


def setup_logging(run_dir=None, console=True, level="INFO"):
    """Console + optional run_dir/log.txt (appended to, so a resumed run continues it). Call once per process;
    later calls replace the sinks. DDP ranks other than 0 pass level="WARNING" and no run_dir."""
    logger.remove()
    if console:
        logger.add(lambda msg: tqdm.write(msg, end="", file=sys.stderr), colorize=True, level=level,
                   format="<green>{time:HH:mm:ss}</green> | <level>{level: <7}</level> | {message}")
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        logger.add(Path(run_dir) / "log.txt", format="{time:YYYY-MM-DD HH:mm:ss} | {level: <7} | {message}")
    return logger


def progress(iterable=None, show=True, **kwargs):
    """A tqdm bar, or a silent one where show is False. tqdm's environment switch (TQDM_DISABLE=1, which
    notebooks/execute.py sets so that saved notebooks hold results, not bar frames) only changes the default of
    `disable`: an explicit disable=False would override it, so a shown bar leaves the argument out."""
    return tqdm(iterable, **kwargs) if show else tqdm(iterable, disable=True, **kwargs)


class MetricsCSV:
    """Appends one row per epoch to run_dir/metrics.csv (the header is taken from the first row)."""

    def __init__(self, path):
        self.path = Path(path)

    def append(self, row):
        fields = self.header()
        if fields is not None and not set(row) <= set(fields):
            # a run resumed by a version that logs other columns: rewrite under the union of both headers (missing
            # values empty), never write a row under a header whose columns it does not match
            rows = self.read_text_rows()
            fields = fields + [k for k in row if k not in fields]
            with self.path.open("w", newline="") as f:
                writer = csv.DictWriter(f, fieldnames=fields)
                writer.writeheader()
                writer.writerows(rows)
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields or list(row))
            if fields is None:
                writer.writeheader()
            writer.writerow(row)

    def header(self):
        """The column names of the file, or None before its first row."""
        if not self.path.exists():
            return None
        with self.path.open() as f:
            return next(csv.reader(f), None)

    def read_text_rows(self):
        with self.path.open() as f:
            return list(csv.DictReader(f))

    def read(self):
        if not self.path.exists():
            return []
        return [{k: float(v) if v != "" else math.nan for k, v in row.items()} for row in self.read_text_rows()]

    def keep_until(self, epoch):
        """Drop the rows after `epoch`: a run killed after writing its row but before its checkpoint repeats
        that epoch when resumed, and must not list it twice."""
        if not self.path.exists():
            return
        with self.path.open() as f:
            reader = csv.DictReader(f)
            fields, rows = reader.fieldnames, [r for r in reader if float(r["epoch"]) <= epoch]
        with self.path.open("w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=fields)
            writer.writeheader()
            writer.writerows(rows)


class TensorBoard:
    """Scalars and images in run_dir/tensorboard (view: tensorboard --logdir runs). A no-op when disabled or when
    TensorBoard cannot be imported: it is a nice-to-have, never a reason for training to fail."""

    def __init__(self, log_dir, enabled=True, purge_step=None):
        self.writer = None
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            logger.warning(f"TensorBoard logging is off: cannot import torch.utils.tensorboard ({e})")
            return
        # purge_step: a resumed run first drops the points the killed run logged after its last checkpoint
        self.writer = SummaryWriter(str(log_dir), purge_step=purge_step)

    def scalars(self, values, step, prefix=""):
        if self.writer is not None:
            for name, value in values.items():
                self.writer.add_scalar(prefix + name, value, step)

    def image(self, tag, image_hwc, step):
        if self.writer is not None and image_hwc is not None:
            self.writer.add_image(tag, image_hwc, step, dataformats="HWC")

    def close(self):
        if self.writer is not None:
            self.writer.close()


def log_dropped_boxes(epoch, pct, warn_above=10.0):
    """Every epoch the share of boxes augmentation dropped; a warning when it is high (tiny objects lost unseen)."""
    message = f"epoch {epoch}: augmentation dropped {pct:.1f}% of the training boxes"
    if pct > warn_above:
        logger.warning(f"{message} (min_box_size, min_visibility, mosaic crops): lower min_box_size or raise "
                       f"img_size if the objects are small; --task check counts the boxes under min_box_size")
    else:
        logger.info(message)


def log_resumed_config(path, model_differences, ignored):
    """A resumed run continues with its checkpoint's config: say which given values that overrules, the model's
    first (another backbone asked for on the command line must not pass unnoticed)."""
    if model_differences:
        logger.warning(f"resume: {path} holds another model than this config; continuing the checkpoint's: "
                       + "; ".join(model_differences) + f". To train the config's model from these weights instead, "
                       f"start a new run with --init_ckpt {path}")
    if ignored:
        logger.warning(f"resume: the run continues with its own config; ignoring the new values of {ignored}")
