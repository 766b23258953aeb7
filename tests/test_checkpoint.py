"""Checkpoints under faults: a run killed while writing one, a full disk or unwritable folder, a resume that asks
for another model, and which checkpoint val / predict use when none is given."""
import errno
import os

import pytest
import torch

from yolo.config import BaseConfig
from yolo.engine import checkpoint
from yolo.engine.checkpoint import (CheckpointWriteError, default_checkpoint, load_checkpoint, output_folder,
                                    save_checkpoint)
from yolo.engine.trainer import train

TINY = dict(shapes_num_train=8, shapes_num_val=4, img_size=64, width=0.25, batch_size=4, num_workers=0,
            device="cpu", seed=1, epochs=1, tensorboard=False)


def tiny_cfg(tmp_path, **fields):
    cfg = BaseConfig()
    for name, value in {**TINY, "data_root": str(tmp_path / "data"), "runs_dir": str(tmp_path / "runs"),
                        **fields}.items():
        setattr(cfg, name, value)
    return cfg.finalize()


def test_killed_while_writing_resumes_from_the_last_good_checkpoint(tmp_path):
    torch.set_num_threads(1)
    _, run_dir = train(tiny_cfg(tmp_path, run_name="killed"))
    # as a run of 2 epochs killed while saving epoch 2: last.pt holds epoch 1, a truncated write lies beside it
    ckpt = load_checkpoint(run_dir / "last.pt")
    ckpt["config"]["epochs"] = 2
    save_checkpoint(ckpt, run_dir / "last.pt")
    partial = run_dir / ".last.pt.tmp4242"
    partial.write_bytes((run_dir / "last.pt").read_bytes()[:1000])
    _, resumed_dir = train(tiny_cfg(tmp_path, run_name="killed", resume=True))
    assert resumed_dir == run_dir and load_checkpoint(run_dir / "last.pt")["epoch"] == 2
    assert not partial.exists() and "did not finish" in (run_dir / "log.txt").read_text()


@pytest.mark.parametrize("error", [errno.ENOSPC, errno.EROFS])
def test_a_failed_write_is_one_clear_error_and_leaves_no_partial_file(tmp_path, monkeypatch, error):
    good = {"weights": torch.ones(3)}
    save_checkpoint(good, tmp_path / "last.pt")

    def failing_save(state, f):  # writes half a file, then the disk is full (or the folder read-only)
        f.write(b"half a checkpoint")
        raise OSError(error, os.strerror(error), f.name)

    monkeypatch.setattr(checkpoint.torch, "save", failing_save)
    with pytest.raises(CheckpointWriteError, match=r"cannot write checkpoint .*last\.pt.*--resume true"):
        save_checkpoint({"weights": torch.zeros(3)}, tmp_path / "last.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["last.pt"]  # the partial write went
    assert torch.equal(load_checkpoint(tmp_path / "last.pt")["weights"], good["weights"])  # the good one stayed


def test_main_reports_a_failed_write_without_a_traceback(tmp_path, monkeypatch, capsys):
    import main

    def full_disk(state, path):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    args = ["--task", "train"] + [f"--{k}={v}" for k, v in TINY.items()] + [
        "--data_root", str(tmp_path / "data"), "--runs_dir", str(tmp_path / "runs")]
    with pytest.raises(SystemExit) as stop:
        main.main(args)
    assert "cannot write checkpoint" in str(stop.value) and "No space left on device" in str(stop.value)


def test_resume_with_another_model_names_the_fields(tmp_path):
    torch.set_num_threads(1)
    _, run_dir = train(tiny_cfg(tmp_path, run_name="r18"))
    ckpt = load_checkpoint(run_dir / "last.pt")
    ckpt["config"]["epochs"] = 2
    save_checkpoint(ckpt, run_dir / "last.pt")
    train(tiny_cfg(tmp_path, run_name="r18", resume=True, backbone="mobilenet_v3_small", width=0.5))
    warning = next(line for line in (run_dir / "log.txt").read_text().splitlines() if "holds another model" in line)
    assert "backbone: 'resnet18' (the config asks for 'mobilenet_v3_small')" in warning
    assert "width: 0.25 (the config asks for 0.5)" in warning
    # a checkpoint whose weights do not fit its own config: one line naming the file, not a load_state_dict dump
    ckpt = load_checkpoint(run_dir / "last.pt")
    ckpt["config"].update(epochs=3, width=0.5)
    save_checkpoint(ckpt, run_dir / "last.pt")
    with pytest.raises(ValueError, match=r"last\.pt does not fit the model its config describes"):
        train(tiny_cfg(tmp_path, run_name="r18", resume=True))


def test_default_checkpoint_prefers_the_runs_own_then_the_newest(tmp_path, log_lines):
    runs = tmp_path / "runs"
    for name in ("exp", "other"):
        save_checkpoint({"epoch": 1}, runs / name / "best.pt")
    os.utime(runs / "exp" / "best.pt", (1, 1))  # "other" is the newest
    cfg = BaseConfig()
    cfg.runs_dir, cfg.run_name = str(runs), "exp"
    assert default_checkpoint(cfg) == runs / "exp" / "best.pt"
    cfg.run_name = "never_trained"
    assert default_checkpoint(cfg) == runs / "other" / "best.pt"
    assert any(str(runs / "other" / "best.pt") in line and "newest" in line for line in log_lines)
    cfg.runs_dir = str(tmp_path / "empty")
    with pytest.raises(FileNotFoundError, match="train first"):
        default_checkpoint(cfg)


def test_resume_continues_the_newest_numbered_run_with_a_last_pt(tmp_path, log_lines):
    """--resume true without resume_path: last.pt of the newest run named run_name (x, x2, ... as default_checkpoint
    picks them), so a killed x2 continues, not x; a newer folder without a last.pt yet is passed over."""
    runs = tmp_path / "runs"
    for name in ("x", "x2"):
        save_checkpoint({"epoch": 1}, runs / name / "last.pt")
    (runs / "x3").mkdir()  # killed before its first epoch ended
    save_checkpoint({"epoch": 1}, runs / "x_evolve" / "last.pt")  # another name, not a numbered run of x
    cfg = BaseConfig()
    cfg.runs_dir, cfg.run_name, cfg.resume = str(runs), "x", True
    assert checkpoint.resume_checkpoint_path(cfg) == runs / "x2" / "last.pt"
    assert any(str(runs / "x2" / "last.pt") in line and "newest run named x" in line for line in log_lines)
    cfg.run_name = "never_trained"
    with pytest.raises(FileNotFoundError, match="resume_path"):
        checkpoint.resume_checkpoint_path(cfg)
    cfg.resume_path = str(runs / "x" / "last.pt")  # named: that one
    assert checkpoint.resume_checkpoint_path(cfg) == runs / "x" / "last.pt"


def test_outputs_go_to_the_run_folder_or_runs_dir_never_beside_a_users_file(tmp_path):
    runs = tmp_path / "runs"
    assert output_folder(runs / "exp" / "best.pt", runs, "predictions") == (runs / "exp" / "predictions").resolve()
    mine = tmp_path / "my_models" / "detector.pt"
    assert output_folder(mine, runs, "predictions") == (runs / "predictions" / "detector").resolve()




def test_a_file_that_is_not_a_checkpoint_of_this_project_names_what_it_lacks(tmp_path):
    from yolo.engine.checkpoint import load_model_checkpoint
    plain = tmp_path / "state_dict.pt"
    torch.save({"conv.weight": torch.zeros(2)}, plain)  # a bare state dict, as torchvision or another project saves
    with pytest.raises(ValueError, match=r"state_dict.pt is not a checkpoint of this project .* no 'model', 'config'"):
        load_model_checkpoint(plain)
    cfg = tiny_cfg(tmp_path, init_ckpt=str(plain))
    with pytest.raises(ValueError, match="no 'model'"):
        from yolo.engine.trainer import train
        train(cfg)


def test_loading_a_checked_checkpoint_keeps_the_models_parameters(tmp_path):
    """Reading a checkpoint checks its weights on a meta model (load_state_dict with assign=True); the weights a resumed
    run then copies into its model must keep that model's parameters -- the ones its optimizer updates."""
    from yolo.engine.model_files import CHECKPOINT_FORMAT, load_model_checkpoint, load_weights
    from yolo.models.detector import build_model

    cfg = tiny_cfg(tmp_path)
    save_checkpoint({"model": build_model(cfg).state_dict(), "config": cfg.to_dict(), "format": CHECKPOINT_FORMAT},
                    tmp_path / "last.pt")
    ckpt = load_model_checkpoint(tmp_path / "last.pt", ("model", "config"))
    model = build_model(cfg)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    load_weights(model, ckpt["model"], "last.pt")
    held = {id(p) for p in optimizer.param_groups[0]["params"]}
    assert all(id(p) in held for p in model.parameters()), "the optimizer no longer holds the model's parameters"
