"""Fine-tuning helpers of the trainer: freezing the backbone, and starting from a checkpoint with other classes."""
import torch

from yolo.config import BaseConfig
from yolo.engine.checkpoint import load_checkpoint
from yolo.engine.trainer import train

TINY = dict(shapes_num_train=16, shapes_num_val=4, img_size=64, width=0.25, batch_size=8, num_workers=0,
            epochs=1, val_interval=1, device="cpu", tensorboard=False)


def tiny_config(tmp_path, **fields):
    cfg = BaseConfig()
    for k, v in {**TINY, "data_root": str(tmp_path / "data"), "runs_dir": str(tmp_path / "runs"), **fields}.items():
        setattr(cfg, k, v)
    return cfg.finalize()


def test_frozen_backbone_does_not_move_and_init_ckpt_skips_other_heads(tmp_path):
    torch.manual_seed(0)
    _, first = train(tiny_config(tmp_path, run_name="first", freeze_backbone_epochs=1))
    # a frozen backbone (weights and BN statistics) keeps its initial state while the neck trains: compare with the
    # the untrained model of the same random seed
    from yolo.models.detector import build_model
    torch.manual_seed(0)
    untrained = build_model(tiny_config(tmp_path)).state_dict()
    trained = load_checkpoint(first / "last.pt")["model"]  # no EMA: the trained weights
    backbone = [k for k in untrained if k.startswith("backbone.")]
    assert all(torch.equal(untrained[k], trained[k]) for k in backbone)
    assert not all(torch.equal(untrained[k], trained[k]) for k in untrained if k.startswith("neck."))

    # fine-tune on 2 classes from the 3-class run: everything but the head convolutions is taken over
    cfg = tiny_config(tmp_path, run_name="second", init_ckpt=str(first / "last.pt"), epochs=1,
                      class_names=["circle", "square"], shapes_num_train=16)
    cfg.data_root = str(tmp_path / "data2")
    _, second = train(cfg)
    log = (second / "log.txt").read_text()
    assert "skipped heads.0.convs.0.weight" in log and "skipped backbone" not in log
