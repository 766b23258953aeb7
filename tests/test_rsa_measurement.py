"""RSA measures something real: two models of the same task trained from different initialisations see the images
more alike than models of two different tasks (built-in shapes vs symbols data, small models)."""
import numpy as np
import pytest
import torch

from yolo.config import BaseConfig
from yolo.data.dataset import build_loader, read_records
from yolo.engine.checkpoint import load_checkpoint
from yolo.engine.trainer import train
from yolo.models.detector import build_model
from yolo.rsa import LAYER_NAMES, similarity_matrices

SMALL_ANCHORS = [[(6, 6), (9, 9), (12, 12)], [(16, 16), (22, 22), (30, 30)], [(40, 40), (56, 56), (80, 80)]]


def task_cfg(tmp_path, task, seed):
    cfg = BaseConfig()
    cfg.width, cfg.img_size, cfg.anchors, cfg.batch_size, cfg.num_workers = 0.25, 128, SMALL_ANCHORS, 16, 0
    # trained as the default config does (lr 0.002, 200 steps of 16 images) until the models detect something
    # (mAP@0.5 above 0.1): models that learned little, or were thrown about by a too high lr, are nearly unrelated
    # and the finest layers of two shapes models then differ as much as a shapes and a symbols model's do
    cfg.shapes_num_train, cfg.shapes_num_val, cfg.cache_images = 400, 100, True
    cfg.epochs, cfg.val_interval, cfg.lr, cfg.warmup_epochs, cfg.tensorboard = 8, 8, 0.002, 1.0, False
    cfg.device, cfg.seed, cfg.runs_dir, cfg.run_name = "cpu", seed, str(tmp_path / "runs"), f"{task}{seed}"
    cfg.data_root = str(tmp_path / task)
    if task == "symbols":
        cfg.class_names, cfg.shapes_seed = ["star", "cross", "ring"], 1
    return cfg.finalize()


@pytest.mark.slow
def test_same_task_models_are_more_alike_than_other_task_models(tmp_path):
    torch.set_num_threads(1)
    runs = [("shapes", 0), ("shapes", 1), ("symbols", 2)]  # every model from its own initialisation
    models = []
    for task, seed in runs:
        cfg = task_cfg(tmp_path, task, seed)
        _, run_dir = train(cfg)
        model = build_model(cfg)
        model.load_state_dict(load_checkpoint(run_dir / "last.pt")["model"])
        models.append(model.eval())
    image_sets = []
    for task in ("shapes", "symbols"):
        cfg = task_cfg(tmp_path, task, 0)
        cfg.cache_images = False
        image_sets.append([images for images, *_ in build_loader(cfg, read_records(cfg, "val"), train=False)])
    sims = similarity_matrices(models, image_sets, show_progress=False)
    same = np.array([sims[name][0, 1] for name in LAYER_NAMES])
    other = np.array([max(sims[name][0, 2], sims[name][1, 2]) for name in LAYER_NAMES])
    print("\nlayer      same task  other task\n" + "\n".join(
        f"{name:9s} {s:9.3f} {o:11.3f}" for name, s, o in zip(LAYER_NAMES, same, other)))
    # Across trainings of this size the gap is 0.01-0.16 at most layers, but at one or two layers (seen: out5 at
    # stride 32, top3 / out3 at stride 8) it is within the spread between initialisations (about 0.03) and flips
    # from one run to the next (docs/multitask_rsa.md has runs of both kinds). So: the same task wins at all but at
    # most two layers, against the closer of the two other-task pairs, and on the mean over the layers.
    wins = int(np.sum(same > other))
    assert wins >= len(LAYER_NAMES) - 2 and same.mean() > other.mean(), \
        f"same-task similarity {same.round(3)} vs other task {other.round(3)}: {wins} of {len(LAYER_NAMES)} layers"
