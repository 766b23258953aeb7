"""What a model file may decide: a checkpoint gives the model (task names, classes, architecture) and never where
files go or which data are read; weights that do not fit are said loudly, or refused when none fit; checkpoints and
genotype files carry a format version, and one of a newer format is refused in one line."""
from pathlib import Path

import pytest
import torch
from loguru import logger

import main
from yolo.config import BaseConfig, apply_overrides
from yolo.data.shapes import ensure_shapes_dataset
from yolo.engine.checkpoint import CHECKPOINT_FORMAT, load_checkpoint, load_model_checkpoint, save_checkpoint
from yolo.research.merge import peel_checkpoint
from yolo.engine.setup import load_initial_weights
from yolo.models.detector import build_model
from yolo.models.search_cell import GENOTYPE_FORMAT, parse_genotype, read_genotype_text, write_genotype
from yolo.tasks import val

ROOT = Path(__file__).resolve().parents[1]
SYMBOLS = ["star", "cross", "ring"]
TINY = dict(width=0.25, img_size=64, num_workers=0, device="cpu", shapes_num_train=4, shapes_num_val=4,
            tensorboard=False, cache_images=False)
BRANCHING = [[3, [[0], [1]]]]


def tiny_cfg(**fields):
    cfg = BaseConfig()
    for name, value in {**TINY, **fields}.items():
        setattr(cfg, name, value)
    return cfg.finalize()


def two_tasks(root, **data):
    return [dict(name="shapes", data_root=str(root / "shapes"), **data),
            {**dict(name="symbols", data_root=str(root / "symbols"), class_names=SYMBOLS, shapes_seed=1), **data}]


def save_tiny(path, cfg, **extra):
    """A checkpoint written by torch.save itself, without a format: as checkpoints of older versions were
    (save_checkpoint stamps the format)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": build_model(cfg).state_dict(), "config": cfg.to_dict(), "epoch": 1, **extra}, path)
    return path


def generate(tasks):
    for spec in tasks:
        ensure_shapes_dataset(spec["data_root"], spec.get("shapes_num_train", 4), spec.get("shapes_num_val", 4),
                              spec.get("shapes_seed", 0), spec.get("class_names", BaseConfig().class_names))


@pytest.fixture(scope="module")
def two_task_ckpt(tmp_path_factory):
    """(folder, a 2-task checkpoint whose tasks were trained on folder/trained_on/<task>, generated there)."""
    tmp = tmp_path_factory.mktemp("model_files")
    tasks = two_tasks(tmp / "trained_on")
    generate(tasks)
    torch.manual_seed(0)
    return tmp, save_tiny(tmp / "two_tasks.pt", tiny_cfg(tasks=tasks, branching=BRANCHING))


def val_args(tmp, ckpt, *extra):
    return ["--config", str(ROOT / "configs" / "my_config.py"), "--task", "val", "--ckpt_path", str(ckpt), "--runs_dir",
            str(tmp / "runs"), *[f"--{k}={v}" for k, v in TINY.items()], *extra]


# ------------------------------------------------------------------------------------------- task names (item 1)
@pytest.mark.parametrize("name", ["../../../../../outside/x", "a/b", "a\\b", ".", "..", "a b", "/abs"])
def test_a_task_name_must_be_a_plain_name(name):
    cfg = apply_overrides(BaseConfig(), ["--tasks", repr([{"name": name}, {"name": "b"}])])
    with pytest.raises(ValueError, match=r"config field 'tasks'.*plain name"):
        cfg.finalize()


def test_plain_task_names_pass():
    cfg = apply_overrides(BaseConfig(), ["--tasks", "[{'name': 'coco-128'}, {'name': 'raccoon_v2.1'}]"]).finalize()
    assert cfg.task_names == ("coco-128", "raccoon_v2.1")


def test_a_checkpoints_task_name_cannot_send_files_outside_runs(two_task_ckpt, tmp_path):
    tmp, good = two_task_ckpt
    ckpt = load_checkpoint(good)
    ckpt["config"]["tasks"][0]["name"] = "../../../../../outside/x"
    evil = tmp_path / "deep" / "er" / "evil.pt"
    save_checkpoint(ckpt, evil)
    with pytest.raises(SystemExit) as stop:
        main.main(val_args(tmp_path, evil))
    message = str(stop.value.code)
    assert str(evil) in message and "plain name" in message and "\n" not in message, message
    assert sorted(p.name for p in tmp_path.iterdir()) == ["deep"]  # nothing written: no runs/, no outside/


# ------------------------------------------------------------------------------ data from the command (item 7)
def test_multi_task_val_reads_the_data_the_command_gives(two_task_ckpt, tmp_path, monkeypatch):
    tmp, ckpt = two_task_ckpt
    held_out = two_tasks(tmp_path / "held_out", shapes_num_val=2, shapes_seed=7)
    generate(held_out)
    read = []
    real_read = val.read_records

    def recording_read(task_cfg, split, **kwargs):
        records = real_read(task_cfg, split, **kwargs)
        read.append((task_cfg.task_name, task_cfg.data_root, split, len(records)))
        return records

    monkeypatch.setattr(val, "read_records", recording_read)
    cfg = apply_overrides(BaseConfig(), [*[f"--{k}={v}" for k, v in TINY.items()], "--ckpt_path", str(ckpt),
                                         "--runs_dir", str(tmp_path / "runs"), "--tasks", repr(held_out)])
    results = val.run(cfg.finalize())
    assert len(results) == 2
    assert read == [("shapes", held_out[0]["data_root"], "val", 2), ("symbols", held_out[1]["data_root"], "val", 2)]
    assert cfg.tasks[1]["class_names"] == SYMBOLS and cfg.branching == BRANCHING  # the model: the checkpoint's



def test_multi_task_val_of_an_onnx_file_reads_the_data_the_command_gives(two_task_ckpt, tmp_path, monkeypatch):
    from yolo.tasks import export

    tmp, ckpt = two_task_ckpt
    cfg = apply_overrides(BaseConfig(), [*[f"--{k}={v}" for k, v in TINY.items()], "--ckpt_path", str(ckpt),
                                         "--runs_dir", str(tmp_path / "runs"), "--export_check_images", "1"])
    onnx_path, _ = export.run(cfg.finalize())
    held_out = two_tasks(tmp_path / "held_out", shapes_num_val=2, shapes_seed=7)
    generate(held_out)
    read, real_read = [], val.read_records
    monkeypatch.setattr(val, "read_records", lambda task_cfg, split, **kw: read.append(task_cfg.data_root)
                        or real_read(task_cfg, split, **kw))
    cfg = apply_overrides(BaseConfig(), [*[f"--{k}={v}" for k, v in TINY.items()], "--ckpt_path", str(onnx_path),
                                         "--runs_dir", str(tmp_path / "runs"), "--tasks", repr(held_out),
                                         "--eval_artifacts", "false"])
    assert len(val.run(cfg.finalize())) == 2
    assert read == [held_out[0]["data_root"], held_out[1]["data_root"]]
    assert cfg.tasks[1]["class_names"] == SYMBOLS  # the model's classes: the exported file's

def test_tasks_of_other_names_than_the_checkpoints_are_refused(two_task_ckpt, tmp_path):
    tmp, ckpt = two_task_ckpt
    other = [dict(name="cats", data_root=str(tmp_path / "c")), dict(name="dogs", data_root=str(tmp_path / "d"))]
    with pytest.raises(SystemExit) as stop:
        main.main(val_args(tmp_path, ckpt, "--tasks", repr(other)))
    message = str(stop.value.code)
    assert str(ckpt) in message and "'shapes', 'symbols'" in message and "'cats', 'dogs'" in message, message
    assert not (tmp_path / "c").exists() and not (tmp_path / "d").exists()


def test_without_tasks_the_checkpoints_own_data_are_read(two_task_ckpt, tmp_path):
    tmp, ckpt = two_task_ckpt
    cfg = apply_overrides(BaseConfig(), [*[f"--{k}={v}" for k, v in TINY.items()], "--ckpt_path", str(ckpt),
                                         "--runs_dir", str(tmp_path / "runs"), "--eval_artifacts", "false"])
    assert len(val.run(cfg.finalize())) == 2


# ------------------------------------------------------------------------------------ weights that do not fit (10)
@pytest.fixture
def warnings_logged():
    lines = []
    sink = logger.add(lambda message: lines.append(message.record["message"]), level="WARNING")
    yield lines
    logger.remove(sink)


def test_init_ckpt_of_a_foreign_file_is_refused(tmp_path):
    foreign = tmp_path / "foreign.pt"
    save_checkpoint({"model": {"fc.weight": torch.zeros(3, 3), "fc.bias": torch.zeros(3)}}, foreign)
    cfg = tiny_cfg(init_ckpt=str(foreign))
    with pytest.raises(ValueError, match=r"foreign\.pt.*none of its weights fits"):
        load_initial_weights(build_model(cfg), cfg)


def test_init_ckpt_that_fits_in_part_is_a_warning_with_counts_and_names(tmp_path, warnings_logged):
    other_classes = save_tiny(tmp_path / "five.pt", tiny_cfg(class_names=list("abcde")))
    cfg = tiny_cfg(init_ckpt=str(other_classes))
    load_initial_weights(build_model(cfg), cfg)
    (warning,) = [w for w in warnings_logged if "five.pt" in w]
    assert "skipped" in warning and "heads.0.convs.0.weight" in warning
    loaded = sum(1 for k in build_model(cfg).state_dict() if not k.startswith("heads."))
    assert f"{loaded} " in warning  # the count of tensors loaded


def test_init_ckpt_of_another_branching_warns(two_task_ckpt, warnings_logged):
    _, ckpt = two_task_ckpt
    cfg = tiny_cfg(tasks=[{"name": "shapes"}, {"name": "symbols", "class_names": SYMBOLS}],
                   branching=[[1, [[0], [1]]]], init_ckpt=str(ckpt))
    load_initial_weights(build_model(cfg), cfg)
    assert any("two_tasks.pt" in w and "skipped" in w for w in warnings_logged), warnings_logged


def test_a_full_fit_says_nothing(tmp_path, warnings_logged):
    same = save_tiny(tmp_path / "same.pt", tiny_cfg())
    cfg = tiny_cfg(init_ckpt=str(same))
    load_initial_weights(build_model(cfg), cfg)
    assert warnings_logged == []


# ------------------------------------------------------------------------------------------ format versions (19)
def test_checkpoints_carry_their_format_and_a_newer_one_is_refused(two_task_ckpt, tmp_path):
    tmp, ckpt = two_task_ckpt
    peeled = peel_checkpoint(ckpt, "symbols", str(tmp_path / "runs"))
    assert load_checkpoint(peeled)["format"] == CHECKPOINT_FORMAT
    newer = load_checkpoint(peeled)
    newer["format"] = CHECKPOINT_FORMAT + 1
    save_checkpoint(newer, tmp_path / "newer.pt")
    with pytest.raises(ValueError, match=rf"newer\.pt.*format {CHECKPOINT_FORMAT + 1}.*update") as error:
        load_model_checkpoint(tmp_path / "newer.pt")
    assert "\n" not in str(error.value)
    assert "format" not in load_checkpoint(ckpt)  # saved without one, as older checkpoints are: still loads
    assert load_model_checkpoint(ckpt)["epoch"] == 1


def test_a_training_checkpoint_carries_its_format(tmp_path):
    from yolo.engine.trainer import train
    torch.set_num_threads(1)
    _, run_dir = train(tiny_cfg(data_root=str(tmp_path / "data"), runs_dir=str(tmp_path / "runs"), epochs=1,
                                batch_size=4, val_interval=1))
    for name in ("last.pt", "best.pt"):
        assert load_checkpoint(run_dir / name)["format"] == CHECKPOINT_FORMAT


GENOTYPE = {"box": [[("std_x2", 0), ("sep_x1", 1)], [("std_x3", 0), ("std_x1", 2)], [("sep_x2", 1), ("std_x1", 3)]],
            "cls": [[("std_x1", 0), ("std_x1", 1)], [("sep_x3", 1), ("std_x2", 2)], [("std_x1", 0), ("std_x1", 3)]]}


def test_genotype_files_carry_their_format_and_a_newer_one_is_refused(tmp_path):
    path = tmp_path / "genotype.txt"
    write_genotype(GENOTYPE, path, header="a test search")
    text = read_genotype_text(path)
    assert f"# yolo genotype format {GENOTYPE_FORMAT}\n" in text and parse_genotype(text) == GENOTYPE
    newer = tmp_path / "newer.txt"
    newer.write_text(text.replace(f"format {GENOTYPE_FORMAT}", f"format {GENOTYPE_FORMAT + 1}"))
    with pytest.raises(ValueError, match=rf"newer\.txt.*format {GENOTYPE_FORMAT + 1}.*search_head"):
        read_genotype_text(newer)
    # the searched head of a config that names it: the error names the file too
    with pytest.raises(ValueError, match=rf"newer\.txt.*format {GENOTYPE_FORMAT + 1}"):
        build_model(tiny_cfg(head="searched", genotype_file=str(newer)))


def test_an_unknown_config_field_of_a_checkpoint_is_warned_once_per_file(tmp_path, log_lines):
    from yolo.engine.checkpoint import load_model

    cfg = tiny_cfg()
    path = tmp_path / "old.pt"
    save_checkpoint({"model": build_model(cfg).state_dict(), "config": {**cfg.to_dict(), "old_field": 3},
                     "epoch": 1}, path)
    load_model(tiny_cfg(ckpt_path=str(path)))  # reads the checkpoint's config more than once
    load_model(tiny_cfg(ckpt_path=str(path)))
    warnings = [line for line in log_lines if "old_field" in line]
    assert len(warnings) == 1 and "WARNING" in warnings[0] and str(path) in warnings[0]
