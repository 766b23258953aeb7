import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from yolo.config import BaseConfig
from yolo.tasks.info import run as run_info
from yolo.models.detector import build_model
from yolo.branching import NECK_BLOCK_NAMES

ROOT = Path(__file__).resolve().parents[1]


def small_config():
    cfg = BaseConfig()
    cfg.task, cfg.width, cfg.img_size = "info", 0.25, 128
    return cfg.finalize()


def test_run_info_reports_blocks_params_and_grids():
    cfg = small_config()
    text = run_info(cfg)

    for index, name in enumerate(NECK_BLOCK_NAMES):
        assert re.search(rf"\| {index} \| {name} \|", text), f"neck block {index} {name} missing"
    # total params: an independent count on a freshly built model
    expected = sum(p.numel() for p in build_model(cfg).parameters())
    reported = int(re.search(r"([\d,]+) params", text).group(1).replace(",", ""))
    assert reported == expected
    # block 1 (out5) by hand: x5 has 512 * 0.25 = 128 channels; 3x3 conv 128 -> 256 without bias + BN (2 * 256)
    assert f"| 1 | out5 | 256 | {128 * 256 * 9 + 2 * 256:,} |" in text
    # a 128 px input gives 16x16, 8x8 and 4x4 grids at strides 8, 16, 32
    for stride, grid in ((8, 16), (16, 8), (32, 4)):
        assert f"| {stride} | {grid}x{grid} |" in text


@pytest.mark.slow
def test_main_task_info_runs():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    result = subprocess.run([sys.executable, "main.py", "--task", "info", "--width", "0.25", "--img_size", "128"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "top5" in result.stderr + result.stdout
