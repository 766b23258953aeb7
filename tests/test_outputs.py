"""Where results go: every run and every result gets a new name (name, name2, ...) so nothing replaces an earlier
one, even when two processes ask for the same name at once; a checkpoint outside runs_dir is resumed into a new run
folder, its own folder left alone; without --ckpt_path the newest run of run_name is used."""
import os
import pathlib
import shutil

import pytest
import torch

from yolo.config import BaseConfig, task_configs
from yolo.data.dataset import read_records
from yolo.engine.checkpoint import default_checkpoint, load_checkpoint, save_checkpoint
from yolo.engine.setup import new_run_dir
from yolo.engine.trainer import train
from yolo.models.detector import build_model
from yolo.tasks import assignments, check, merge, peel, predict, rsa, val

TINY = dict(shapes_num_train=8, shapes_num_val=4, img_size=64, width=0.25, batch_size=4, num_workers=0,
            device="cpu", seed=1, epochs=1, tensorboard=False)
SYMBOLS = ["star", "cross", "ring"]


def tiny_cfg(tmp_path, **fields):
    cfg = BaseConfig()
    for name, value in {**TINY, "data_root": str(tmp_path / "data"), "runs_dir": str(tmp_path / "runs"),
                        **fields}.items():
        setattr(cfg, name, value)
    return cfg.finalize()


def multi_cfg(tmp_path, **fields):
    tasks = [dict(name="shapes", data_root=str(tmp_path / "shapes")),
             dict(name="symbols", data_root=str(tmp_path / "symbols"), class_names=SYMBOLS, shapes_seed=1)]
    return tiny_cfg(tmp_path, **{"tasks": tasks, "branching": [[3, [[0], [1]]]], "run_name": "mt",
                                 "shapes_num_val": 6, **fields})


def save_model(cfg, path):
    """An untrained model of cfg as a checkpoint val / predict / merge / peel accept."""
    torch.manual_seed(0)
    save_checkpoint({"model": build_model(cfg).state_dict(), "config": cfg.to_dict(), "epoch": 1}, path)
    return path


def generate_data(cfg):
    """The built-in data of every task of cfg, as training generates it (the other commands only read it)."""
    for task in task_configs(cfg):
        read_records(task, "val")
    return cfg


def listing(folder):
    return {p.relative_to(folder): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------------------------------ two runs at once
def test_a_run_folder_taken_between_check_and_create_gives_the_next_name(tmp_path, monkeypatch):
    """Another process creates runs/exp just before this one does: this one takes exp2 instead of crashing."""
    cfg = tiny_cfg(tmp_path, run_name="exp")
    base = tmp_path / "runs" / "exp"
    real_mkdir = pathlib.Path.mkdir

    def raced_mkdir(self, *args, **kwargs):
        if self == base and not base.exists():
            real_mkdir(base, parents=True)  # the other process wins the race for the name
            raise FileExistsError(17, "File exists", str(base))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(pathlib.Path, "mkdir", raced_mkdir)
    assert new_run_dir(cfg) == tmp_path / "runs" / "exp2"
    monkeypatch.undo()
    (tmp_path / "runs" / "exp3").mkdir()
    assert new_run_dir(cfg) == tmp_path / "runs" / "exp4"


# ------------------------------------------------------------------------------------------ resume
def test_resuming_a_checkpoint_outside_runs_dir_leaves_its_folder_alone(tmp_path, capsys):
    torch.set_num_threads(1)
    _, run_dir = train(tiny_cfg(tmp_path, run_name="r", eval_artifacts=False))
    ckpt = load_checkpoint(run_dir / "last.pt")
    ckpt["config"]["epochs"] = 2  # as a run of 2 epochs stopped after the first
    users = tmp_path / "u"
    users.mkdir()
    save_checkpoint(ckpt, users / "best.pt")
    (users / "metrics.csv").write_text("my own numbers\n")
    before = listing(users)
    _, resumed_dir = train(tiny_cfg(tmp_path, run_name="r", resume=True, resume_path=str(users / "best.pt")))
    assert listing(users) == before  # nothing written into, nothing replaced in the user's folder
    assert resumed_dir == tmp_path / "runs" / "r2"
    assert load_checkpoint(resumed_dir / "last.pt")["epoch"] == 2
    assert (resumed_dir / "metrics.csv").read_text().count("\n") == 2  # header + the resumed epoch
    assert f"new run folder {resumed_dir}" in capsys.readouterr().err


@pytest.mark.parametrize("rank", [0, 1])
def test_the_resumed_run_folder_is_rank_0s_choice_on_every_process(tmp_path, monkeypatch, rank):
    """Rank 0 decides the folder (its checkpoint's, or a new one outside runs_dir) and every process takes part in
    the broadcast that hands it over, whichever folder it is: a process deciding alone could skip the collective."""
    from yolo.engine import setup
    from yolo.engine.distributed import DistInfo

    chosen = tmp_path / "rank0s_choice"
    sent = []
    monkeypatch.setattr(setup, "broadcast_object",
                        lambda obj, info: sent.append(obj) or (obj if info.is_main else chosen))
    cfg = tiny_cfg(tmp_path, run_name="r")
    inside = tmp_path / "runs" / "r" / "last.pt"
    got = setup.resume_run_dir(inside, cfg, DistInfo(rank=rank, world_size=2))
    assert len(sent) == 1  # every process calls the collective, also for a checkpoint inside runs_dir
    assert got == (inside.parent if rank == 0 else chosen) and sent[0] == (inside.parent if rank == 0 else None)


# ------------------------------------------------------------------------------------------ results never replaced
def test_val_and_predict_write_a_new_folder_beside_an_earlier_one(tmp_path, capsys):
    torch.set_num_threads(1)
    cfg = generate_data(tiny_cfg(tmp_path, predict_max_images=2))
    run_dir = tmp_path / "runs" / "exp"
    cfg.ckpt_path = str(save_model(cfg, run_dir / "best.pt"))
    earlier = [run_dir / "val" / "per_class.csv", run_dir / "predictions" / "predictions.json"]
    for path in earlier:
        path.parent.mkdir(parents=True)
        path.write_text("an earlier result")
    val.run(cfg)
    assert (run_dir / "val2" / "per_class.csv").is_file()
    assert str(run_dir / "val2") in capsys.readouterr().err  # the log says where
    assert predict.run(cfg) == run_dir / "predictions2" and (run_dir / "predictions2" / "predictions.json").is_file()
    assert all(sorted(path.parent.iterdir()) == [path] and path.read_text() == "an earlier result" for path in earlier)


def test_merge_and_peel_never_replace_an_earlier_checkpoint(tmp_path):
    a = save_model(tiny_cfg(tmp_path, data_root=str(tmp_path / "shapes")), tmp_path / "a.pt")
    b = save_model(tiny_cfg(tmp_path, data_root=str(tmp_path / "symbols"), class_names=SYMBOLS, shapes_seed=1),
                   tmp_path / "b.pt")
    cfg = multi_cfg(tmp_path, merge_ckpts=f"{a},{b}")
    first = merge.run(cfg)
    first_bytes = first.read_bytes()
    second = merge.run(cfg)
    assert (first.name, second.name) == ("mt.pt", "mt2.pt") and first.read_bytes() == first_bytes

    cfg.peel_task, cfg.ckpt_path = "symbols", str(second)
    peeled = [peel.run(cfg), peel.run(cfg)]
    assert [p.name for p in peeled] == ["symbols.pt", "symbols2.pt"]
    assert all(load_checkpoint(p)["peeled_task"] == "symbols" for p in peeled)


def test_a_failed_write_leaves_no_empty_file_under_the_reserved_name(tmp_path, monkeypatch):
    from yolo.research import merge as engine_merge
    from yolo.engine.checkpoint import CheckpointWriteError

    def full_disk(state, path):
        raise CheckpointWriteError(f"cannot write checkpoint {path}: no space left on device")

    monkeypatch.setattr(engine_merge, "save_checkpoint", full_disk)
    (tmp_path / "mt.pt").write_text("an earlier merge")
    with pytest.raises(CheckpointWriteError):
        engine_merge.save_as_new({"model": {}}, tmp_path / "mt.pt")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mt.pt"]


def earlier_result(folder):
    """A folder holding the result of an earlier command: returns a check that it is still exactly as it was."""
    (folder / "earlier.png").parent.mkdir(parents=True)
    (folder / "earlier.png").write_text("an earlier result")
    return lambda: sorted(p.name for p in folder.iterdir()) == ["earlier.png"]


def test_rsa_writes_a_new_folder_beside_an_earlier_one(tmp_path):
    torch.set_num_threads(1)
    a = save_model(tiny_cfg(tmp_path, data_root=str(tmp_path / "shapes")), tmp_path / "a.pt")
    b = save_model(tiny_cfg(tmp_path, data_root=str(tmp_path / "symbols"), class_names=SYMBOLS, shapes_seed=1),
                   tmp_path / "b.pt")
    cfg = generate_data(multi_cfg(tmp_path, rsa_ckpts=f"{a},{b}", rsa_images=4))
    untouched = earlier_result(tmp_path / "runs" / "rsa")
    assert rsa.run(cfg, measure_ms=False)["out_dir"] == tmp_path / "runs" / "rsa2" and untouched()


@pytest.mark.parametrize("command, folder", [(check, "check"), (assignments, "debug")])
def test_check_and_debug_write_a_new_folder_beside_an_earlier_one(tmp_path, command, folder):
    torch.set_num_threads(1)
    runs = tmp_path / "runs"
    untouched = earlier_result(runs / folder)
    command.run(generate_data(tiny_cfg(tmp_path, num_debug_batch=1)))
    assert untouched() and any((runs / f"{folder}2").iterdir())
    # several tasks: one new folder, a subfolder per task
    command.run(generate_data(multi_cfg(tmp_path, num_debug_batch=1, shapes_num_train=2, shapes_num_val=2)))
    assert sorted(p.name for p in (runs / f"{folder}3").iterdir()) == ["shapes", "symbols"]


# ------------------------------------------------------------------------------------------ default checkpoint
def test_without_ckpt_path_the_newest_run_of_run_name_is_used(tmp_path):
    runs = tmp_path / "runs"
    for name in ("shapes", "shapes2", "shapes10", "shapes9", "shapes_evolve", "other"):
        save_checkpoint({"epoch": 1}, runs / name / "best.pt")
    os.utime(runs / "shapes" / "best.pt", (1, 1))
    (runs / "shapes11").mkdir()  # a run still before its first evaluation: no best.pt yet
    cfg = BaseConfig()
    cfg.runs_dir, cfg.run_name = str(runs), "shapes"
    assert default_checkpoint(cfg) == runs / "shapes10" / "best.pt"  # numeric order: 10 after 9 and 2
    from loguru import logger
    lines = []
    sink = logger.add(lambda message: lines.append(str(message)), level="INFO")
    try:
        default_checkpoint(cfg)
    finally:
        logger.remove(sink)
    assert any(str(runs / "shapes10" / "best.pt") in line and "newest run named shapes" in line for line in lines)
    shutil.rmtree(runs / "shapes10")
    assert default_checkpoint(cfg) == runs / "shapes9" / "best.pt"
