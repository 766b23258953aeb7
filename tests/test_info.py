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
    assert float(re.search(r"CPU ([\d.]+) ms per image \(batch 8, \d+ threads", text).group(1)) > 0


def test_ms_per_image_times_each_model_per_image_in_turns():
    import time

    import torch

    from yolo.models.flops import ms_per_image

    calls = []

    class Sleeper(torch.nn.Module):  # a forward that takes a known time per image
        def __init__(self, name, ms):
            super().__init__()
            self.name, self.ms = name, ms

        def forward(self, x, task=0):
            calls.append((self.name, task))
            time.sleep(self.ms * len(x) / 1000)
            return x

    fast, slow = Sleeper("fast", 2.0), Sleeper("slow", 6.0)
    ms = ms_per_image([fast, slow], torch.zeros(4, 3), rounds=4, task=None)
    assert ms[0] >= 2.0 and ms[1] >= 6.0 and ms[1] > 2 * ms[0]  # sleeps last at least that long; per image
    # one warm-up each, then turns whose order flips every other round; the keyword reaches every call
    assert [name for name, _ in calls] == ["fast", "slow"] + ["fast", "slow", "slow", "fast"] * 2
    assert {task for _, task in calls} == {None}


@pytest.mark.slow
def test_main_task_info_runs():
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    result = subprocess.run([sys.executable, "main.py", "--task", "info", "--width", "0.25", "--img_size", "128"],
                            cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "top5" in result.stderr + result.stdout
