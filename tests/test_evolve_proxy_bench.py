"""bench/evolve_proxy.py: its rank correlation and proxy specs, and (slow) every part at toy size, continued where a
first run stopped."""
import csv
import importlib.util
import os
import subprocess
import sys

import pytest

from conftest import ROOT

spec = importlib.util.spec_from_file_location("bench_evolve_proxy", ROOT / "bench" / "evolve_proxy.py")
bench = importlib.util.module_from_spec(spec)
spec.loader.exec_module(bench)


def test_spearman():
    assert bench.spearman([1, 2, 3, 4], [10, 20, 30, 40]) == pytest.approx(1.0)
    assert bench.spearman([1, 2, 3, 4], [4, 3, 2, 1]) == pytest.approx(-1.0)
    # ties share their mean rank: ranks (0.5, 0.5, 2, 3) against (0, 1, 2, 3) -> Pearson of the ranks
    assert bench.spearman([1, 1, 2, 3], [1, 2, 3, 4]) == pytest.approx(0.9486833, abs=1e-6)
    assert bench.spearman([0.3, 0.1, 0.2], [30, 10, 20]) == pytest.approx(1.0)


def test_proxy_specs():
    assert bench.proxy_overrides("epochs=2, train_images=500,val_images=100") == [
        "--epochs", "2", "--train_images", "500", "--val_images", "100"]
    assert bench.proxy_overrides("") == []


@pytest.mark.slow  # about 16 toy trainings, twice
def test_smoke_run_writes_rows_and_continues(tmp_path):
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "bench/evolve_proxy.py", "all", "--smoke", "--out", str(tmp_path)]
    first = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert first.returncode == 0, first.stderr[-3000:]
    with (tmp_path / "smoke" / "rows.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["part"] for r in rows} == {"proxy", "target"} and len(rows) == 3 * 2 + 3 * 2
    assert "Spearman" in first.stdout and "winner - start" in first.stdout
    again = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0 and (tmp_path / "smoke" / "rows.csv").read_text().count("\n") == len(rows) + 1
    assert " s\n" not in again.stdout.split("## proxy")[0]  # nothing trained again: every row was there
