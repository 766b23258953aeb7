"""Optional MLflow tracking (config `mlflow_uri`): a run's config as params, every epoch's metrics.csv row as metrics
(step = epoch), and at its end the plots, tables, config.json, log.txt and best.pt as artifacts.

    mlflow_uri = "runs/mlflow"             a folder: an SQLite store sqlite:///runs/mlflow/mlflow.db, artifacts
                                           in runs/mlflow/artifacts (view: mlflow ui --backend-store-uri <that>)
    mlflow_uri = "http://10.0.0.1:5000"    a tracking server (or any URI with a scheme: sqlite:///, file://)

A resumed training continues its MLflow run (the checkpoint holds its id: RUN_ID_KEY); evolve trials are runs
nested in the search's run. Only the process that makes the run's files logs (rank 0 under DDP). MLflow is
imported only here, when a config asks for it; it is not a requirement (pip install mlflow).
"""
import math
import numbers
import os
import time
from pathlib import Path

from loguru import logger

from .model_files import first_line

INSTALL = "pip install mlflow"
RUN_ID_KEY = "mlflow_run_id"     # a training checkpoint's key for the id of its MLflow run
RUN_ID_FILE = "mlflow_run_id.txt"  # the same for a folder without checkpoints (an evolve search)
PARAM_CHARS = 500                # MLflow servers refuse longer param values (older ones: 500); config.json has all
# what a run folder holds worth keeping with the run: the figures, metrics.csv and per_class.csv, the config, the log
# and the best weights (not last.pt: the same model a second time, and resuming reads the run folder anyway)
TRAINING_FILES = ("*.png", "*.csv", "config.json", "log.txt", "best.pt")


def import_mlflow(uri):
    """The mlflow module, or an ImportError of one line saying what to install (main.py prints it as it is)."""
    try:
        import mlflow
        from mlflow.tracking import MlflowClient  # noqa: F401  (a broken install fails here, not mid-training)
    except ImportError as e:
        raise ImportError(f"config field 'mlflow_uri' = {uri!r} needs MLflow, which cannot be imported ({e}): "
                          f"{INSTALL}, or set mlflow_uri = None") from None
    return mlflow


def tracking_uri(uri):
    """The MLflow tracking URI of config mlflow_uri and the artifact location of new experiments (None: the store
    decides). A folder becomes an SQLite database in it: MLflow 3 keeps its plain-folder store in maintenance mode
    and refuses it unless told otherwise (MLFLOW_ALLOW_FILE_STORE, set here only for an explicit file:// URI)."""
    if "://" in uri or uri.startswith("databricks"):
        if uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
        return uri, None
    folder = Path(uri).resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{(folder / 'mlflow.db').as_posix()}", (folder / "artifacts").as_uri()


class MLflowLog:
    """One MLflow run: start() it once the run's folder and config are known, log_metrics() as results come,
    finish() it with its files; end() (in a `finally`) marks a run that did not finish FAILED. Until started (and
    when mlflow_uri is None: then MLflow is never imported) every call is a no-op, as on DDP processes other than
    rank 0, which never start one; like engine/logs.TensorBoard.

    Made before anything is written: a config that asks for MLflow without it installed stops there, on every
    process alike. Once a run is started, a failed log call is a warning: a network hiccup must not end a long
    training (its numbers are in metrics.csv too)."""

    def __init__(self, uri=None, parent_run_id=None):
        self.client, self.run_id, self.parent_run_id = None, None, parent_run_id
        if uri:
            import_mlflow(uri)

    def start(self, cfg, run_dir, run_id=None, id_file=None):
        """A new run named after run_dir in experiment cfg.mlflow_experiment (the parent's, when nested) with cfg's
        fields as params, or the run `run_id` (resume) continued. id_file: a file that names the run to continue
        when it exists, and gets the id of a new one."""
        if not cfg.mlflow_uri:
            return None
        client_class = import_mlflow(cfg.mlflow_uri).tracking.MlflowClient  # a resumed run's uri: its checkpoint's
        uri, artifact_location = tracking_uri(cfg.mlflow_uri)
        if id_file is not None and Path(id_file).is_file():
            run_id = Path(id_file).read_text().strip() or None
        try:
            self.client = client_class(tracking_uri=uri)
            self.run_id = self.continued(run_id) if run_id else None
            if self.run_id is None:
                self.run_id = self.new_run(cfg, run_dir, artifact_location)
        except Exception as e:  # MLflow wraps what went wrong (no server, bad URI ...) in several exception types
            self.client = self.run_id = None
            raise ValueError(f"config field 'mlflow_uri' = {cfg.mlflow_uri!r}: cannot start an MLflow run "
                             f"({first_line(e)})") from None
        if id_file is not None:
            Path(id_file).write_text(self.run_id + "\n")
        return self.run_id

    def continued(self, run_id):
        """run_id, set running again; None (and a warning) when the store no longer holds it."""
        try:
            run = self.client.get_run(run_id)
        except Exception as e:  # deleted, or another store than the one the run started in
            logger.warning(f"MLflow: cannot continue run {run_id} ({first_line(e)}); starting a new run")
            return None
        self.client.update_run(run_id, status="RUNNING")
        logger.info(f"MLflow: continuing run {run.info.run_name} ({run_id})")
        return run_id

    def new_run(self, cfg, run_dir, artifact_location):
        from mlflow.entities import Param

        tags = {"run_dir": str(Path(run_dir).resolve())}
        if self.parent_run_id:  # MLflow's own tag for nesting: the UI shows the run under its parent
            tags["mlflow.parentRunId"] = self.parent_run_id
            experiment_id = self.client.get_run(self.parent_run_id).info.experiment_id
        else:
            experiment_id = self.experiment_id(cfg.mlflow_experiment, artifact_location)
        run = self.client.create_run(experiment_id, run_name=Path(run_dir).name, tags=tags)
        params = [Param(k, str(v)[:PARAM_CHARS]) for k, v in sorted(cfg.to_dict().items())]
        self.client.log_batch(run.info.run_id, params=params)
        logger.info(f"MLflow: run {run.info.run_name} ({run.info.run_id}) in experiment {cfg.mlflow_experiment!r} "
                    f"at {cfg.mlflow_uri}")
        return run.info.run_id

    def experiment_id(self, name, artifact_location):
        experiment = self.client.get_experiment_by_name(name)
        if experiment is not None:
            return experiment.experiment_id
        try:
            return self.client.create_experiment(name, artifact_location=artifact_location)
        except Exception:  # another run created it in the meantime
            experiment = self.client.get_experiment_by_name(name)
            if experiment is None:
                raise
            return experiment.experiment_id

    def log_metrics(self, values, step):
        """The finite numbers of `values` (a metrics.csv row: NaN marks an epoch without evaluation) at `step`;
        an `epoch` entry is the step itself and is left out."""
        if self.run_id is None:
            return
        from mlflow.entities import Metric

        now = int(1000 * time.time())
        metrics = [Metric(k, float(v), now, int(step)) for k, v in values.items()
                   if k != "epoch" and isinstance(v, numbers.Real) and math.isfinite(v)]
        self.call(self.client.log_batch, self.run_id, metrics=metrics)

    def finish(self, run_dir, patterns=TRAINING_FILES, folders=()):
        """Upload run_dir's files matching `patterns`, and those of its subfolders `folders` (a multi-task run's
        task folders) under the same names; then mark the run FINISHED."""
        if self.run_id is None:
            return
        run_dir = Path(run_dir)
        for folder, artifact_path in [(run_dir, None)] + [(run_dir / f, f) for f in folders]:
            for path in sorted({p for pattern in patterns for p in folder.glob(pattern) if p.is_file()}):
                self.call(self.client.log_artifact, self.run_id, str(path), artifact_path)
        self.end("FINISHED")

    def end(self, status="FAILED"):
        """Mark the run `status` (when it is still open: finish() closed it already)."""
        if self.run_id is not None:
            self.call(self.client.set_terminated, self.run_id, status)
            self.run_id = None

    def checkpoint_fields(self):
        """What a training checkpoint stores of the run, so that a resumed training continues it."""
        return {RUN_ID_KEY: self.run_id} if self.run_id else {}

    def call(self, method, *args, **kwargs):
        try:
            method(*args, **kwargs)
        except Exception as e:  # see the class docstring: a warning, never the end of the training
            logger.warning(f"MLflow: {method.__name__} failed ({first_line(e)}); the run folder has the same data")
