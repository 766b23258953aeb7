"""config decode_reach: a wider reach than the label assignment's, carried by the model, its checkpoint and its ONNX
file; bench/decode_range.py's targets against a hand-computed case."""
import sys

import numpy as np
import pytest
import torch

from conftest import ROOT
from test_export import outputs_close, two_task_checkpoint
from yolo.config import BaseConfig, apply_overrides
from yolo.data.records import Record
from yolo.models.detector import build_model
from yolo.models.head import REACH
from yolo.models.onnx_model import OnnxModel, read_metadata
from yolo.tasks import export

sys.path.insert(0, str(ROOT))
from bench.decode_range import target_numbers  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one torch thread


def small(*args):
    return apply_overrides(BaseConfig(), ["--width", "0.125", "--img_size", "64", *args]).finalize()


@pytest.mark.parametrize("args, message", [(["--decode_reach", "1.0"], ">= 1.5"),
                                           (["--label_assignment", "all_grid", "--decode_reach", "3"], "whole grid"),
                                           (["--decode_reach", "'far'"], "must be None or a number")])
def test_a_reach_the_assignment_cannot_use_is_refused(args, message):
    with pytest.raises(ValueError, match=message):
        small(*args)


def test_the_model_decodes_with_decode_reach_and_the_assignments_reach_without_it():
    assert build_model(small()).decoding.reach == REACH["nearby_grid"] == 1.5
    assert build_model(small("--decode_reach", "2.5")).decoding.reach == 2.5
    assert build_model(small("--label_assignment", "single_grid", "--decode_reach", "1.5")).decoding.reach == 1.5


def test_export_carries_the_checkpoints_reach_and_keeps_parity(tmp_path):
    args, model = two_task_checkpoint(tmp_path, ["--decode_reach", "2.0"])
    path, _ = export.run(apply_overrides(BaseConfig(), args[:-2]).finalize())  # the command does not say the reach
    assert read_metadata(path)["decoding"]["reach"] == 2.0
    onnx_model = OnnxModel(path)
    assert onnx_model.decoding.reach == 2.0
    images = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        diffs, ok = outputs_close(model.eval()(images), onnx_model(images), export.PARITY_TOL)
    assert ok, diffs


@pytest.mark.parametrize("reach", [None, 2.0])
def test_decode_range_finds_the_far_neighbours_on_the_edge_at_the_assignments_reach_only(reach):
    """A GT centred on a cell corner (16, 16 at stride 8: between the cells centred at 12 and 20): nearby_grid also
    assigns the cells centred at 28, 1.5 cells away, whose target u is exactly 0 at reach 1.5 (the sigmoid's flat
    end) and 0.5 - 1.5 / 4 = 0.125 at reach 2. Every target lies in [0, 1]."""
    cfg = small(*(["--decode_reach", str(reach)] if reach else []))
    boxes = np.array([[9.5, 9.5, 22.5, 22.5], [30, 8, 50, 40]], dtype=np.float32)
    record = Record("x.jpg", 64, 64, boxes, np.array([0, 1]), np.array([False, False]))
    anchors = torch.tensor(cfg.anchors, dtype=torch.float32) / 4  # anchors for 64 px
    numbers = target_numbers(cfg, [record], anchors)
    centres = torch.cat([u[:, :2] for u in numbers.values()])
    assert len(centres) >= 4 and ((centres >= 0) & (centres <= 1)).all()
    closest = float(torch.minimum(centres, 1 - centres).min())  # the centre target nearest an edge
    assert closest == pytest.approx(0.0 if reach is None else 0.125, abs=1e-6)
