"""The searched head as the reference's RepShare builds it (Zhong et al., ECCV 2020): x2 decoupled through its own
1x1 conv, the class tower reading the box feature as state 0, genotypes read and written in the reference's
`Genotype(normal=..., normal_concat=range(2, 5))` form as well as this project's text, older formats refused."""
import re

import pytest
import torch
from test_head_search import randomize

from yolo.config import BaseConfig
from yolo.engine.checkpoint import load_model_checkpoint, save_checkpoint
from yolo.models.detector import build_model
from yolo.models.search_cell import GENOTYPE_FORMAT, format_genotype, parse_genotype, read_genotype_text, write_genotype
from yolo.models.search_ops import OPS, REFERENCE_OPS, RepShare, StackedOp

CHANNELS = 8

# the two towers the reference's paper reports (its README, "Architectures reported in the paper"): box, then class
PUBLISHED = (
    "Genotype(normal=[[('sinSep_conv_3x3_x3', 0), ('std_conv_3x3_x3', 1)], [('std_conv_3x3', 2), "
    "('sinSep_conv_3x3+dil_conv_3x3', 1)], [('sinSep_conv_3x3_x2', 2), ('std_conv_3x3_x2', 3)]], "
    "normal_concat=range(2, 5))\n"
    "Genotype(normal=[[('sinSep_conv_3x3_x2+dil_conv_3x3', 1), ('std_conv_3x3_x3', 0)], "
    "[('sinSep_conv_3x3_x2+dil_conv_3x3', 0), ('sinSep_conv_3x3', 2)], [('sinSep_conv_3x3_x2', 2), "
    "('std_conv_3x3', 3)]], normal_concat=range(2, 5))\n")
PUBLISHED_AS_OURS = {
    "box": [[("sep_x3", 0), ("std_x3", 1)], [("std_x1", 2), ("sep_x1_dil", 1)], [("sep_x2", 2), ("std_x2", 3)]],
    "cls": [[("sep_x2_dil", 1), ("std_x3", 0)], [("sep_x2_dil", 0), ("sep_x1", 2)], [("sep_x2", 2), ("std_x1", 3)]],
}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: one torch thread (tiny convs)


# ------------------------------------------------------------------------------------------------- RepShare
@pytest.mark.parametrize("family", ["std", "sep"])
def test_x2_is_decoupled_through_its_own_1x1_like_the_stand_alone_op(family):
    chain = randomize(RepShare(family, CHANNELS))
    x = torch.randn(2, CHANNELS, 9, 11, generator=torch.Generator().manual_seed(0))
    x1, x2, x3 = chain(x)[:3]
    with torch.no_grad():
        y2 = chain.units[1](chain.units[0](x))  # what x3 builds on
        torch.testing.assert_close(x3, chain.units[2](y2))
        torch.testing.assert_close(x2, chain.decouple2(y2))
        torch.testing.assert_close(x1, chain.decouple1(chain.units[0](x)))
    assert not torch.allclose(x2, y2)  # the candidate is not the raw tensor the deeper units read
    op = StackedOp(f"{family}_x2", CHANNELS)
    assert isinstance(op.decouple, torch.nn.Conv2d) and op.decouple.kernel_size == (1, 1)
    op.load_state_dict(chain.stand_alone_state(f"{family}_x2"))  # strict: the 1x1 is the chain's decouple2
    torch.testing.assert_close(op(x), x2)
    # only x1 and x2 are decoupled, as in the reference (its last unit and the dilated branches are not)
    assert StackedOp(f"{family}_x3", CHANNELS).decouple is None
    assert StackedOp(f"{family}_x2_dil", CHANNELS).decouple is None


def small_cfg(tmp_path, head, genotype_text=None):
    cfg = BaseConfig()
    cfg.width, cfg.img_size, cfg.head_channels, cfg.cell_channels = 0.125, 64, 8, 4
    cfg.runs_dir, cfg.head = str(tmp_path / "runs"), head
    if genotype_text is not None:
        (tmp_path / "g.txt").write_text(genotype_text)
        cfg.genotype_file = str(tmp_path / "g.txt")
    return cfg.finalize()


@pytest.mark.parametrize("head", ["search", "searched", "tower3x3"])
def test_the_class_tower_reads_the_box_feature_first_and_tower3x3_the_scale_feature(tmp_path, head):
    cfg = small_cfg(tmp_path, "searched" if head == "searched" else "conv1x1", PUBLISHED)
    torch.manual_seed(0)
    tower_head = build_model(cfg, head=head).eval().heads[0]
    seen = {}
    for name in ("box_tower", "cls_tower"):
        getattr(tower_head, name).register_forward_hook(
            lambda m, inputs, out, name=name: seen.update({name: (inputs, out)}))  # None: the output stays
    with torch.no_grad():
        tower_head([torch.randn(1, proj[0].in_channels, 8 // 2 ** i, 8 // 2 ** i)
                    for i, proj in enumerate(tower_head.proj)])
    (box_s0, box_s1), box_out = seen["box_tower"]
    (cls_s0, cls_s1), _ = seen["cls_tower"]
    assert box_s0 is box_s1  # the box tower reads the scale's projection twice
    assert cls_s0 is box_out and cls_s1 is box_s1  # the reference's order: [box feature, scale feature]
    if head == "tower3x3":  # the hand-made tower reads the scale's feature in both towers
        with torch.no_grad():
            torch.testing.assert_close(tower_head.cls_tower(cls_s0, cls_s1), tower_head.cls_tower.units(cls_s1))


# ------------------------------------------------------------------------------------------------- genotypes
def test_a_published_genotype_of_the_reference_form_is_read_and_written_back(tmp_path):
    assert parse_genotype(PUBLISHED, source="paper.txt") == PUBLISHED_AS_OURS
    written = format_genotype(PUBLISHED_AS_OURS, form="reference")
    assert written == PUBLISHED + f"# yolo genotype format {GENOTYPE_FORMAT}\n"
    # and a searched head trains it: its box tower's edges are the mapped ops
    model = build_model(small_cfg(tmp_path, "searched", PUBLISHED))
    assert [e.op.name for e in model.heads[0].box_tower.edges] == ["sep_x3", "std_x3", "std_x1", "sep_x1_dil",
                                                                    "sep_x2", "std_x2"]


@pytest.mark.parametrize("form", ["text", "reference"])
def test_genotype_files_round_trip_in_both_forms(tmp_path, form):
    path = tmp_path / f"genotype_{form}.txt"
    write_genotype(PUBLISHED_AS_OURS, path, header="a test search\nstep 9", form=form)
    text = read_genotype_text(path)
    assert text.startswith("# a test search\n# step 9\n")
    assert text.endswith(f"# yolo genotype format {GENOTYPE_FORMAT}\n")
    assert parse_genotype(text) == PUBLISHED_AS_OURS
    assert ("Genotype(normal=" in text) == (form == "reference")
    other = "reference" if form == "text" else "text"
    assert parse_genotype(format_genotype(parse_genotype(text), form=other)) == PUBLISHED_AS_OURS


def test_the_reference_names_map_to_every_op_of_this_search_space():
    assert sorted(REFERENCE_OPS.values()) == sorted(OPS[1:])
    assert REFERENCE_OPS["std_conv_3x3"] == "std_x1"
    assert REFERENCE_OPS["sinSep_conv_3x3_x2+dil_conv_3x3"] == "sep_x2_dil"


@pytest.mark.parametrize("op", ["sep_conv_3x3", "dil_conv_3x3", "none", "std_conv_3x3+dil_conv_3x3_r3", "std_x1"])
def test_an_unknown_op_of_the_reference_form_is_refused(op):
    bad = PUBLISHED.replace("'std_conv_3x3', 2", f"'{op}', 2")
    with pytest.raises(ValueError, match=rf"paper\.txt: box tower, node 3: unknown op '{re.escape(op)}'.*std_conv_3x3"):
        parse_genotype(bad, source="paper.txt")


@pytest.mark.parametrize("bad, message", [
    (PUBLISHED.splitlines()[0] + "\n", "2 lines"),
    (PUBLISHED.replace("range(2, 5)", "range(2, 6)", 1), "normal_concat=range\\(2, 5\\)"),
    (PUBLISHED.replace("('std_conv_3x3', 2)", "('std_conv_3x3', 3)"), "node 3 may only read states 0..2"),
    (PUBLISHED.replace("('std_conv_3x3', 2)", "__import__('os')"), "not a list"),
    (PUBLISHED + "box: 2 = std_x2(0) + sep_x1(1); 3 = std_x3(0) + std_x1(2); 4 = sep_x2(1) + std_x1(3)\n", "both"),
], ids=["one line", "concat", "later state", "code", "both forms"])
def test_a_malformed_reference_genotype_is_one_clear_error(bad, message):
    with pytest.raises(ValueError, match=message):
        parse_genotype(bad, source="paper.txt")


OLD_TEXT = ("box: 2 = std_x2(0) + sep_x1(1); 3 = std_x3(0) + std_x1(2); 4 = sep_x2(1) + std_x1(3)\n"
            "cls: 2 = std_x2(0) + sep_x1(1); 3 = std_x3(0) + std_x1(2); 4 = sep_x2(1) + std_x1(3)\n")


@pytest.mark.parametrize("format_line", ["# yolo genotype format 1\n", ""])
def test_a_genotype_of_the_old_format_is_refused_in_one_line(tmp_path, format_line):
    path = tmp_path / "old.txt"
    path.write_text("# head search, step 24/24 (final)\n" + OLD_TEXT + format_line)
    with pytest.raises(ValueError, match=r"old\.txt: genotype format 1.*search again") as error:
        read_genotype_text(path)
    assert "\n" not in str(error.value)
    assert parse_genotype(OLD_TEXT + f"# yolo genotype format {GENOTYPE_FORMAT}\n")["box"][0] == [("std_x2", 0),
                                                                                                   ("sep_x1", 1)]


def test_a_searched_checkpoint_of_the_old_format_is_refused_in_one_line(tmp_path):
    cfg = small_cfg(tmp_path, "searched", OLD_TEXT + f"# yolo genotype format {GENOTYPE_FORMAT}\n")
    state = build_model(cfg).state_dict()
    config = cfg.to_dict()
    config["genotype"] = "# head search\n" + OLD_TEXT + "# yolo genotype format 1\n"  # what an older search wrote
    path = tmp_path / "runs" / "old" / "best.pt"
    save_checkpoint({"model": state, "config": config, "epoch": 1}, path)
    with pytest.raises(ValueError, match=rf"checkpoint {path}: its searched head's genotype is format 1") as error:
        load_model_checkpoint(path)
    assert "\n" not in str(error.value) and "train the head again" in str(error.value)
