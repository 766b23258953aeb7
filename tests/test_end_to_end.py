"""The three tasks through main.py on a small built-in dataset (CPU, about a minute): training must learn
something (a non-zero mAP), val must reproduce it, predict must draw it."""
import os
import shutil
import subprocess
import sys

import pytest
import torch

from conftest import ROOT

TINY = ["--shapes_num_train", "24", "--shapes_num_val", "8", "--img_size", "128", "--width", "0.25",
        "--batch_size", "8", "--num_workers", "0", "--val_interval", "1"]
# long enough to learn: small anchors for 128 px, a higher lr, the images cached; about 40 s on one thread
LEARNS = ["--shapes_num_train", "48", "--shapes_num_val", "16", "--img_size", "128", "--width", "0.25",
          "--batch_size", "8", "--num_workers", "0", "--epochs", "30", "--val_interval", "10", "--lr", "0.02",
          "--warmup_epochs", "1", "--cache_images", "true",
          "--anchors", "[[(6,6),(9,9),(12,12)],[(16,16),(22,22),(30,30)],[(40,40),(56,56),(80,80)]]"]


def run_main(*args):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "NO_ALBUMENTATIONS_UPDATE": "1"}
    out = subprocess.run([sys.executable, "main.py", *args], cwd=ROOT, capture_output=True, text=True, env=env,
                         timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout + out.stderr


@pytest.mark.slow
def test_train_val_predict(tmp_path):
    common = ["--data_root", str(tmp_path / "data"), "--runs_dir", str(tmp_path / "runs"), *LEARNS]
    log = run_main("--task", "train", "--run_name", "smoke", *common)
    run = tmp_path / "runs" / "smoke"
    for name in ("best.pt", "last.pt", "config.json", "log.txt", "metrics.csv", "results.png"):
        assert (run / name).is_file(), name
    assert "Average Precision" in log
    ckpt = torch.load(run / "best.pt", map_location="cpu", weights_only=True)
    assert "model" in ckpt and "config" in ckpt
    assert ckpt["map50"] > 0.02, "30 epochs on 48 images must learn something, not compare 0.000 with 0.000"

    log = run_main("--task", "val", "--ckpt_path", str(run / "best.pt"), *common)
    assert f"{ckpt['map50']:.3f}" in log  # val reproduces the mAP@0.5 saved with best.pt

    run_main("--task", "predict", *common, "--predict_max_images", "3")  # newest run's best.pt by default
    predictions = run / "predictions"
    assert len(list(predictions.glob("*.jpg"))) == 3 and (predictions / "predictions.json").is_file()

    # a checkpoint of the user's own, outside runs_dir: its folder is left alone, the pictures go under runs_dir
    mine = tmp_path / "my_models"
    mine.mkdir()
    shutil.copy(run / "best.pt", mine / "detector.pt")
    run_main("--task", "predict", *common, "--predict_max_images", "2", "--ckpt_path", str(mine / "detector.pt"))
    assert sorted(p.name for p in mine.iterdir()) == ["detector.pt"]
    assert len(list((tmp_path / "runs" / "predictions" / "detector").glob("*.jpg"))) == 2


@pytest.mark.slow
def test_bad_checkpoint_is_a_clear_error(tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_text("not a checkpoint")
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"}
    for path in (bad, tmp_path / "missing.pt"):
        out = subprocess.run([sys.executable, "main.py", "--task", "val", "--ckpt_path", str(path)], cwd=ROOT,
                             capture_output=True, text=True, env=env, timeout=120)
        assert out.returncode != 0 and str(path) in out.stderr and "Traceback" not in out.stderr
