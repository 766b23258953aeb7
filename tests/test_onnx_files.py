"""ONNX files: each export has its own name and records the checkpoint it came from (path and content), backend
onnxruntime runs only an export of the checkpoint asked for, a killed export's temporary file is cleaned up, and a
broken, foreign or other-version .onnx gets one line naming the file and what to do."""
import json
import os
import shutil

import onnx
import pytest
import torch
from loguru import logger

import main
from yolo.config import BaseConfig, apply_overrides
from yolo.data.shapes import ensure_shapes_dataset
from yolo.engine.checkpoint import load_model, save_checkpoint
from yolo.engine.exports import exported_path
from yolo.models.detector import build_model
from yolo.models.onnx_model import FORMAT, read_metadata
from yolo.tasks import export


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one torch thread


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """(folder, config args, {name: checkpoint}): three random tiny models, 'a' and 'b' both named best.pt in
    folders of their own outside runs_dir, 'c' in runs_dir/tiny/; the built-in data they are checked on."""
    tmp = tmp_path_factory.mktemp("onnx_files")
    ensure_shapes_dataset(str(tmp / "data"), 2, 2, 0, num_workers=1)
    args = ["--data_root", str(tmp / "data"), "--runs_dir", str(tmp / "runs"), "--img_size", "64", "--width", "0.25",
            "--shapes_num_train", "2", "--shapes_num_val", "2", "--num_workers", "0", "--batch_size", "2",
            "--export_check_images", "1", "--device", "cpu"]
    cfg = apply_overrides(BaseConfig(), args).finalize()
    paths = {}
    for seed, (name, path) in enumerate({"a": tmp / "x/a/best.pt", "b": tmp / "x/b/best.pt",
                                         "c": tmp / "runs/tiny/best.pt"}.items()):
        torch.manual_seed(seed)
        save_checkpoint({"model": build_model(cfg).state_dict(), "config": cfg.to_dict(), "epoch": 0}, path)
        paths[name] = path
    return tmp, args, paths


def run_export(args, ckpt, *more):
    path, _ = export.run(apply_overrides(BaseConfig(), args + ["--ckpt_path", str(ckpt), *more]).finalize())
    return path


def onnxruntime_model(args, ckpt):
    cfg = apply_overrides(BaseConfig(), args + ["--ckpt_path", str(ckpt), "--backend", "onnxruntime"]).finalize()
    return load_model(cfg)[0]


def in_a_run(setup, name, source="a"):
    """A copy of checkpoint `source` as runs_dir/<name>/best.pt."""
    tmp, _, paths = setup
    (tmp / "runs" / name).mkdir(parents=True)
    return shutil.copy(paths[source], tmp / "runs" / name / "best.pt")


def test_checkpoints_of_one_name_outside_runs_dir_get_exports_of_their_own(setup):
    tmp, args, paths = setup
    onnx_a, onnx_b = run_export(args, paths["a"]), run_export(args, paths["b"])
    assert onnx_a != onnx_b and onnx_a.is_file() and onnx_b.is_file()
    assert onnx_a.parent.parent == (tmp / "runs" / "export").resolve() and onnx_a.name == "best.onnx"
    assert onnx_a == exported_path(paths["a"], tmp / "runs")
    source = read_metadata(onnx_a)["source"]
    assert source["checkpoint"] == str(paths["a"].resolve()) and len(source["sha256"]) >= 16
    assert source["bytes"] == paths["a"].stat().st_size
    model = onnxruntime_model(args, paths["a"])  # a's export, not the b's made later
    assert model.path == str(onnx_a) and model.meta["source"]["checkpoint"] == str(paths["a"].resolve())


def test_onnxruntime_refuses_the_export_of_a_checkpoint_since_replaced(setup):
    tmp, args, paths = setup
    ckpt = in_a_run(setup, "retrained")
    run_export(args, ckpt)
    shutil.copy(paths["b"], ckpt)  # the same path, re-trained: the export beside it is of the old weights
    with pytest.raises(ValueError) as error:
        onnxruntime_model(args, ckpt)
    message = str(error.value)
    assert "\n" not in message and "best.onnx" in message
    assert f"python main.py --task export --ckpt_path {ckpt}" in message


def test_a_second_export_with_other_options_gets_its_own_name(setup, log_lines, monkeypatch):
    tmp, args, paths = setup
    monkeypatch.setattr(export, "setup_logging", lambda: None)  # keep the test's log sink
    ckpt = in_a_run(setup, "options")
    first = run_export(args, ckpt)
    content = first.read_bytes()
    second = run_export(args, ckpt, "--export_fuse", "false")
    assert first.name == "best.onnx" and second == first.with_name("best2.onnx")
    assert first.read_bytes() == content  # kept
    assert any(f"wrote {second}" in line for line in log_lines)
    assert read_metadata(second)["export"]["fuse"] is False and read_metadata(first)["export"]["fuse"] is True
    assert run_export(args, ckpt, "--export_fuse", "false") == second  # the same export again: its own name
    assert sorted(p.name for p in first.parent.glob("*.onnx")) == ["best.onnx", "best2.onnx"]
    os.utime(first)  # the newest export of the checkpoint is the one backend onnxruntime runs
    assert onnxruntime_model(args, ckpt).path == str(first)
    shutil.copy(paths["b"], ckpt)  # re-trained: a new export takes the next name, the earlier ones stay
    third = run_export(args, ckpt)
    assert third.name == "best3.onnx" and onnxruntime_model(args, ckpt).path == str(third)


def test_export_removes_the_temporary_file_a_killed_export_left(setup):
    tmp, args, paths = setup
    ckpt = in_a_run(setup, "killed")
    run = ckpt.parent
    dead = 2 ** 22 + 1  # above Linux's pid_max: no process has it
    (run / f".best.onnx.tmp{dead}").write_bytes(b"\0" * 4096)
    live = run / f".best.onnx.tmp{os.getppid()}"  # another export that is running now: its file is left alone
    live.write_bytes(b"\0")
    other = run / f".last.onnx.tmp{dead}"  # another output name: not this export's
    other.write_bytes(b"\0")
    run_export(args, ckpt)
    assert sorted(p.name for p in run.iterdir()) == sorted(["best.pt", "best.onnx", live.name, other.name])


# ------------------------------------------------------------------------------------------------- broken files
@pytest.fixture(scope="module")
def exported(setup):
    """The export of checkpoint c (in runs_dir/tiny)."""
    tmp, args, paths = setup
    return run_export(args, paths["c"])


def with_metadata(original, target, **changes):
    """A copy of the .onnx `original` with metadata entries changed (None: removed)."""
    proto = onnx.load(str(original))
    props = {p.key: p.value for p in proto.metadata_props}
    props.update({k: v for k, v in changes.items()})
    del proto.metadata_props[:]
    for key, value in props.items():
        if value is not None:
            entry = proto.metadata_props.add()
            entry.key, entry.value = key, value
    onnx.save(proto, str(target))
    return target


def foreign_model(target):
    graph = onnx.helper.make_graph([onnx.helper.make_node("Identity", ["x"], ["y"])], "g",
                                   [onnx.helper.make_tensor_value_info("x", onnx.TensorProto.FLOAT, [1])],
                                   [onnx.helper.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [1])])
    onnx.save(onnx.helper.make_model(graph), str(target))
    return target


def broken_files(folder, exported):
    """{what: (file, a phrase the one-line error must hold)}."""
    folder.mkdir(exist_ok=True)
    data = exported.read_bytes()
    (folder / "random.onnx").write_bytes(os.urandom(5000))
    (folder / "truncated.onnx").write_bytes(data[:len(data) // 2])
    (folder / "empty.onnx").write_bytes(b"")
    older = FORMAT.rsplit("/", 1)[0] + "/1"
    newer = FORMAT.rsplit("/", 1)[0] + "/99"
    return {
        "random": (folder / "random.onnx", "cannot read"),
        "truncated": (folder / "truncated.onnx", "cannot read"),
        "empty": (folder / "empty.onnx", "empty"),
        "foreign": (foreign_model(folder / "foreign.onnx"), "not written by `python main.py --task export`"),
        "older": (with_metadata(exported, folder / "older.onnx", format=json.dumps(older), export=None,  # as format 1
                                source=json.dumps(str(exported.with_suffix(".pt")))),
                  f"python main.py --task export --ckpt_path {exported.with_suffix('.pt')}"),
        "newer": (with_metadata(exported, folder / "newer.onnx", format=json.dumps(newer)), "newer"),
        "no_decoding": (with_metadata(exported, folder / "no_decoding.onnx", decoding=None), "'decoding'"),
        "bad_json": (with_metadata(exported, folder / "bad_json.onnx", outputs="{not json"), "'outputs'"),
    }


@pytest.mark.parametrize("command", ["val", "predict"])
def test_broken_onnx_files_get_one_line(setup, exported, command):
    tmp, args, _ = setup
    for what, (path, phrase) in broken_files(tmp / "broken", exported).items():
        with pytest.raises(SystemExit) as stop:
            main.main(["--task", command, "--ckpt_path", str(path), *args])
        message = str(stop.value.code)
        assert message.startswith("error: ") and "\n" not in message, (what, message)
        assert str(path) in message and phrase in message, (what, message)
    logger.remove()  # main's logging setup added a console sink


def test_onnxruntime_of_a_checkpoint_skips_foreign_files_of_its_export_name(setup):
    tmp, args, _ = setup
    ckpt = in_a_run(setup, "foreign")
    foreign_model(exported_path(ckpt, tmp / "runs"))  # a file at the export's name that export did not write
    with pytest.raises(ValueError, match=f"--task export --ckpt_path {ckpt}"):
        onnxruntime_model(args, ckpt)
    path = run_export(args, ckpt)
    assert path.name == "best2.onnx" and onnxruntime_model(args, ckpt).path == str(path)


def test_a_file_older_than_a_model_field_gets_that_fields_default_not_the_configs(setup, exported):
    """An export made before box_bins and decode_reach existed has neither in its model_config: its model had no box
    bins and the assignment's reach, whatever the command's config says."""
    tmp, args, _ = setup
    model_config = read_metadata(exported)["model_config"]
    old = {k: v for k, v in model_config.items() if k not in ("box_bins", "decode_reach")}
    path = with_metadata(exported, tmp / "before_box_bins.onnx", model_config=json.dumps(old))
    cfg = apply_overrides(BaseConfig(), args + ["--ckpt_path", str(path), "--box_bins", "8", "--decode_reach", "2"])
    model = load_model(cfg.finalize())[0]
    assert (cfg.box_bins, cfg.decode_reach) == (0, None) and model.decoding.reach == 1.5
