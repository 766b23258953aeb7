"""Real data from ../shared/data (skipped when it is absent): the coco128 quirks, and one training epoch on raccoon
(VOC xml) and on coco128 (YOLO txt) through main.py, small and fast (img_size 160, width 0.25)."""
import csv
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import ROOT, SHARED_DATA

from yolo.data.checks import Problems
from yolo.data.yolo_txt import read_yolo_txt


def shared(name):
    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"shared dataset {path} not available")
    return path


def test_coco128_quirks_are_reported():
    root = shared("coco128")
    problems = Problems("coco128", show_per_kind=0)
    records, names = read_yolo_txt(str(root), "train", problems=problems)
    assert len(names) == 80 and len(records) == 128
    # independent reference: the label files' own lines
    label_dir = root / "labels/train"
    lines = {p.stem: [line for line in p.read_text().splitlines() if line.strip()] for p in label_dir.glob("*.txt")}
    by_stem = {Path(r.image_path).stem: r for r in records}
    assert sum(len(r.boxes) for r in records) == sum(len(v) for k, v in lines.items() if k in by_stem) == 929
    assert {stem for stem, r in by_stem.items() if len(r.boxes) == 0} == {"000000000250", "000000000508"}
    orphans = {Path(p.file).name for p in problems.items if p.kind == "orphan annotation"}
    assert orphans == {"000000000656.txt", "000000000659.txt"}
    assert all(p.kind == "orphan annotation" for p in problems.items)  # nothing else is wrong with it
    first = by_stem["000000000009"]
    label, cx, cy, w, h = (float(v) for v in lines["000000000009"][0].split())
    np.testing.assert_allclose(first.boxes[0], [(cx - w / 2) * first.width, (cy - h / 2) * first.height,
                                                (cx + w / 2) * first.width, (cy + h / 2) * first.height], atol=1e-3)


@pytest.mark.slow
@pytest.mark.parametrize("name", ["raccoon", "coco128"])
def test_one_epoch_on_real_data(name, tmp_path):
    root = shared(name)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    args = ["--config", f"configs/{name}.py", "--task", "train", "--data_root", str(root), "--epochs", "1",
            "--img_size", "160", "--width", "0.25", "--batch_size", "16", "--num_workers", "0", "--val_interval", "1",
            "--runs_dir", str(tmp_path), "--run_name", name, "--tensorboard", "false", "--time_budget", "None"]
    out = subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    with open(tmp_path / name / "metrics.csv") as f:
        (row,) = list(csv.DictReader(f))
    assert 0 <= float(row["map50"]) <= 1 and np.isfinite(float(row["loss"]))
    if name == "coco128":  # the loading summary names what it skipped
        assert "2 orphan annotation (ignored)" in out.stderr
