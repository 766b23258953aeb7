"""Logging: loguru to the console (through tqdm, so bars stay intact) and to the run's log file; metrics.csv."""
import csv
import sys
from pathlib import Path

from loguru import logger
from tqdm import tqdm


def setup_logging(run_dir=None, console=True):
    """Console + optional run_dir/log.txt. Call once per process; later calls replace the sinks."""
    logger.remove()
    if console:
        logger.add(lambda msg: tqdm.write(msg, end="", file=sys.stderr), colorize=True,
                   format="<green>{time:HH:mm:ss}</green> | <level>{level: <7}</level> | {message}")
    if run_dir is not None:
        Path(run_dir).mkdir(parents=True, exist_ok=True)
        logger.add(Path(run_dir) / "log.txt", format="{time:YYYY-MM-DD HH:mm:ss} | {level: <7} | {message}")
    return logger


class MetricsCSV:
    """Appends one row per evaluation to run_dir/metrics.csv (the header is taken from the first row)."""

    def __init__(self, path):
        self.path = Path(path)

    def append(self, row):
        new = not self.path.exists()
        with self.path.open("a", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(row))
            if new:
                writer.writeheader()
            writer.writerow(row)

    def read(self):
        if not self.path.exists():
            return []
        with self.path.open() as f:
            return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]
