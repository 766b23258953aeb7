"""MLflow tracking (config mlflow_uri, yolo/engine/mlflow_log.py): what a training logs, read back with MLflow's own
client; a resumed training continues its run; evolve trials nest in the search's run; without MLflow installed a
config that asks for it is one line."""
import importlib.util
import os
import sys

import pytest
import torch

from yolo.config import BaseConfig
from yolo.engine.checkpoint import load_checkpoint, save_checkpoint
from yolo.engine.mlflow_log import RUN_ID_KEY, MLflowLog, tracking_uri

# .ci/run installs MLflow; the project itself runs without it (the one-line refusal is tested either way)
needs_mlflow = pytest.mark.skipif(importlib.util.find_spec("mlflow") is None, reason="mlflow is not installed")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = dict(shapes_num_train=8, shapes_num_val=4, img_size=64, width=0.25, batch_size=4, num_workers=0,
            device="cpu", seed=1, epochs=1, val_interval=1, tensorboard=False, cache_images=True)


def tiny_cfg(tmp_path, **fields):
    cfg = BaseConfig()
    for name, value in {**TINY, "data_root": str(tmp_path / "data"), "runs_dir": str(tmp_path / "runs"),
                        "mlflow_uri": str(tmp_path / "mlflow"), **fields}.items():
        setattr(cfg, name, value)
    return cfg.finalize()


def client_of(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=tracking_uri(uri)[0])


def only_run(client, experiment="yolo"):
    runs = client.search_runs([client.get_experiment_by_name(experiment).experiment_id])
    assert len(runs) == 1, [r.info.run_name for r in runs]
    return runs[0]


@needs_mlflow
@pytest.mark.slow  # two tiny trainings (about 10 s)
def test_a_training_logs_params_metrics_and_artifacts_and_its_resume_continues_the_run(tmp_path):
    from yolo.engine.trainer import train

    torch.set_num_threads(1)
    _, run_dir = train(tiny_cfg(tmp_path, run_name="ml"))
    client = client_of(str(tmp_path / "mlflow"))
    run = only_run(client)
    assert run.info.run_name == "ml" and run.info.status == "FINISHED"
    assert run.data.params["lr"] == str(BaseConfig().lr) and run.data.params["epochs"] == "1"
    assert run.data.params["mlflow_uri"] == str(tmp_path / "mlflow")
    history = client.get_metric_history(run.info.run_id, "map50")
    assert [m.step for m in history] == [1] and 0 <= history[0].value <= 1
    assert {"loss", "box", "obj", "cls", "lr", "time_s", "map"} <= set(run.data.metrics)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"best.pt", "results.png", "metrics.csv", "config.json", "log.txt", "pr_curve.png"} <= artifacts
    assert "last.pt" not in artifacts
    assert (tmp_path / "mlflow" / "artifacts").is_dir() and not (tmp_path / "mlruns").exists()
    assert load_checkpoint(run_dir / "last.pt")[RUN_ID_KEY] == run.info.run_id

    # as a run of 2 epochs killed after epoch 1 (test_checkpoint.py): the resume continues the same MLflow run
    ckpt = load_checkpoint(run_dir / "last.pt")
    ckpt["config"]["epochs"] = 2
    save_checkpoint(ckpt, run_dir / "last.pt")
    client.update_run(run.info.run_id, status="RUNNING")
    _, resumed_dir = train(tiny_cfg(tmp_path, run_name="ml", resume=True))
    assert resumed_dir == run_dir
    resumed = only_run(client)
    assert resumed.info.run_id == run.info.run_id and resumed.info.status == "FINISHED"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "map50")] == [1, 2]
    assert resumed.data.params["epochs"] == "1"  # params are those the run started with; MLflow never changes one


def test_without_mlflow_a_config_asking_for_it_is_one_line_before_anything_is_written(tmp_path, monkeypatch):
    import main

    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if it were not installed
    monkeypatch.chdir(ROOT)
    args = ["--task", "train", "--data_root", str(tmp_path / "data"), "--runs_dir", str(tmp_path / "runs"),
            "--mlflow_uri", str(tmp_path / "mlflow")] + [f"--{k}={v}" for k, v in TINY.items()]
    with pytest.raises(SystemExit) as stop:
        main.main(args)
    message = str(stop.value)
    assert message.startswith("error: config field 'mlflow_uri'") and "pip install mlflow" in message
    assert "\n" not in message
    assert not (tmp_path / "runs").exists() and not (tmp_path / "mlflow").exists()


def test_mlflow_off_imports_nothing(monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)
    log = MLflowLog(None)
    assert log.start(BaseConfig().finalize(), "runs/x") is None
    log.log_metrics({"map50": 0.5}, step=1)
    log.finish("runs/x")
    log.end()
    assert log.checkpoint_fields() == {}


@pytest.mark.parametrize("bad", ["", "  ", 5])
def test_a_bad_mlflow_uri_is_refused_by_name(bad):
    cfg = BaseConfig()
    cfg.mlflow_uri = bad
    with pytest.raises(ValueError, match="config field 'mlflow_uri'"):
        cfg.finalize()


def test_a_folder_is_an_sqlite_store_a_uri_is_kept(tmp_path):
    uri, artifacts = tracking_uri(str(tmp_path / "store"))
    assert uri == f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}" and artifacts == (tmp_path / "store" / "artifacts").as_uri()
    assert tracking_uri("http://10.0.0.1:5000") == ("http://10.0.0.1:5000", None)


@needs_mlflow
def test_nested_runs_nan_left_out_failed_runs_marked_and_a_folder_id_file_continues(tmp_path):
    cfg = BaseConfig().finalize()
    cfg.mlflow_uri = (tmp_path / "file_store").as_uri()  # MLflow's plain-folder store, asked for explicitly
    search_dir = tmp_path / "t_evolve"
    search_dir.mkdir()
    parent = MLflowLog(cfg.mlflow_uri)
    parent_id = parent.start(cfg, search_dir, id_file=search_dir / "mlflow_run_id.txt")
    child = MLflowLog(cfg.mlflow_uri, parent_run_id=parent_id)
    child_id = child.start(cfg, tmp_path / "gen1")
    child.log_metrics({"epoch": 1, "map50": 0.25, "map": float("nan")}, step=1)
    child.end()  # the training raised
    (search_dir / "evolve.csv").write_text("generation\n1\n")
    parent.finish(search_dir, patterns=("evolve.csv",))

    client = client_of(cfg.mlflow_uri)
    kid = client.get_run(child_id)
    assert kid.data.tags["mlflow.parentRunId"] == parent_id and kid.info.status == "FAILED"
    assert kid.data.metrics == {"map50": 0.25}
    assert kid.info.experiment_id == client.get_run(parent_id).info.experiment_id
    assert [a.path for a in client.list_artifacts(parent_id)] == ["evolve.csv"]
    # a resumed search reads the id its folder holds and continues that run
    again = MLflowLog(cfg.mlflow_uri)
    assert again.start(cfg, search_dir, id_file=search_dir / "mlflow_run_id.txt") == parent_id
    assert client.get_run(parent_id).info.status == "RUNNING"
    again.end("FINISHED")


@needs_mlflow
def test_a_store_that_cannot_be_reached_is_one_line(tmp_path):
    cfg = BaseConfig().finalize()
    cfg.mlflow_uri = "unknownscheme://nowhere"
    with pytest.raises(ValueError, match=r"config field 'mlflow_uri' = 'unknownscheme://nowhere': cannot start"):
        MLflowLog(cfg.mlflow_uri).start(cfg, tmp_path / "run")


@needs_mlflow
@pytest.mark.slow  # a search of two tiny trainings
def test_evolve_trials_are_runs_nested_in_the_searchs_run(tmp_path):
    import main

    monkey_root = os.getcwd()
    os.chdir(ROOT)
    try:
        main.main(["--task", "evolve", "--runs_dir", str(tmp_path / "runs"), "--data_root", str(tmp_path / "data"),
                   "--run_name", "t", "--mlflow_uri", str(tmp_path / "mlflow"), "--evolve_generations", "2",
                   "--evolve_confirm_seeds", "0", "--evolve_params", "lr", *[f"--{k}={v}" for k, v in TINY.items()]])
    finally:
        os.chdir(monkey_root)
    client = client_of(str(tmp_path / "mlflow"))
    runs = client.search_runs([client.get_experiment_by_name("yolo").experiment_id])
    search = next(r for r in runs if r.info.run_name == "t_evolve")
    trials = sorted((r for r in runs if r is not search), key=lambda r: r.info.run_name)
    assert [r.info.run_name for r in trials] == ["gen1", "gen2"]
    assert all(r.data.tags["mlflow.parentRunId"] == search.info.run_id for r in trials)
    assert all(r.info.status == "FINISHED" for r in runs)
    assert [m.step for m in client.get_metric_history(search.info.run_id, "fitness")] == [1, 2]
    assert {"evolve.csv", "evolve.png", "best_config.py", "best.pt"} <= {
        a.path for a in client.list_artifacts(search.info.run_id)}
    assert (tmp_path / "runs" / "t_evolve" / "mlflow_run_id.txt").read_text().strip() == search.info.run_id


@needs_mlflow
@pytest.mark.slow  # a tiny head search (2 epochs of 2 steps)
def test_a_head_search_is_a_run_with_its_losses_and_files(tmp_path):
    from yolo.tasks import search_head

    torch.set_num_threads(1)
    cfg = tiny_cfg(tmp_path, run_name="t", width=0.125, shapes_num_train=12, batch_size=6, search_epochs=2,
                   search_genotype_interval=1, head_channels=8, cell_channels=4, search_mode="end_to_end")
    _, run_dir = search_head.run(cfg)
    client = client_of(cfg.mlflow_uri)
    run = only_run(client)
    assert run.info.run_name == "t_search" and run.info.status == "FINISHED"
    assert run.data.params["search_epochs"] == "2"
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "alpha_loss")]
    assert steps == list(range(1, len(steps) + 1)) and len(steps) >= 2
    assert {"genotype.txt", "alphas.png", "cells.png", "config.json"} <= {
        a.path for a in client.list_artifacts(run.info.run_id)}


class FailingMLflow:
    """An MLflowLog whose start fails as one that cannot reach its store does."""
    starts = 0

    def start(self, cfg, run_dir, run_id=None, id_file=None):
        self.starts += 1
        raise ValueError(f"config field 'mlflow_uri' = {cfg.mlflow_uri!r}: cannot start an MLflow run (no server)")


def test_mlflow_starts_before_the_model_is_built_and_a_failure_stops_there(tmp_path, monkeypatch):
    """Under DDP the model is wrapped (a collective) in build_training: MLflow starts before it, so a store that
    cannot be reached stops every process with the same error instead of leaving the others waiting."""
    from yolo.engine import trainer
    from yolo.engine.distributed import DistInfo

    built = []
    monkeypatch.setattr(trainer, "build_training", lambda *args: built.append(args) or pytest.fail("model built"))
    mlflow = FailingMLflow()
    with pytest.raises(ValueError, match="cannot start an MLflow run"):
        trainer.run_training(tiny_cfg(tmp_path), DistInfo(), None, mlflow)
    assert mlflow.starts == 1 and not built


def test_every_process_raises_the_error_of_rank_0s_mlflow_start(tmp_path, monkeypatch):
    """A process other than rank 0 starts no MLflow run; it gets rank 0's outcome (the broadcast) and raises the
    same error."""
    from yolo.engine import trainer
    from yolo.engine.distributed import DistInfo

    error = ValueError("config field 'mlflow_uri' = 'x': cannot start an MLflow run (no server)")
    sent = []
    # rank 0's broadcast sends its own outcome; another process receives what rank 0 sent (`error`)
    monkeypatch.setattr(trainer, "broadcast_object",
                        lambda obj, info: sent.append(obj) or (obj if info.is_main else error))
    mlflow = FailingMLflow()
    with pytest.raises(ValueError, match="cannot start an MLflow run") as raised:
        trainer.start_mlflow(mlflow, tiny_cfg(tmp_path), tmp_path / "run", None, DistInfo(rank=1, world_size=2))
    assert raised.value is error and sent == [None] and mlflow.starts == 0
    with pytest.raises(ValueError, match="no server") as raised:  # rank 0: its own error, handed to the others
        trainer.start_mlflow(mlflow, tiny_cfg(tmp_path), tmp_path / "run", None, DistInfo())
    assert mlflow.starts == 1 and raised.value is sent[-1]
