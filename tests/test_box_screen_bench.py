"""bench/box_screen.py without training: the verdict of its table from hand-made rows."""
import argparse
import sys

from conftest import ROOT

sys.path.insert(0, str(ROOT))
from bench.box_screen import VARIANTS, append_row, report, screen_config, setting  # noqa: E402


def test_a_variant_is_a_gain_only_when_each_seeds_difference_exceeds_the_baseline_spread(tmp_path, capsys):
    rows = [("baseline", 0, 0.50), ("baseline", 1, 0.52),      # spread 0.02
            ("box_bins_8", 0, 0.53), ("box_bins_8", 1, 0.55),  # +0.03, +0.03: a gain
            ("ema", 0, 0.53), ("ema", 1, 0.53),                # +0.03, +0.01: within the spread
            ("obj_iou_0.5", 0, 0.47), ("obj_iou_0.5", 1, 0.49)]  # -0.03, -0.03: a loss
    args = argparse.Namespace(out=tmp_path, config="configs/cards.py", minutes=5.0, one_class=False, extra=[])
    for variant, seed, value in rows + [("box_bins_8", 0, 0.9)]:  # the last made with other minutes: not shown
        row = dict(variant=variant, seed=seed, setting=setting(args), map50=value + 0.2, map=value, epochs=10,
                   time_s=60, run="r")
        append_row(tmp_path / "rows.csv", row if value < 0.9 else {**row, "setting": "3 min"})
    report(args)
    table = {line.split("|")[1].strip(): line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")}
    assert table["box_bins_8"].rstrip(" |").endswith("gain") and "+0.030, +0.030" in table["box_bins_8"]
    assert table["ema"].rstrip(" |").endswith("within the spread")
    assert table["obj_iou_0.5"].rstrip(" |").endswith("loss")
    assert (tmp_path / "report.md").is_file()


def test_every_variant_is_a_valid_config(tmp_path):
    """A typo in a variant's overrides fails here, not after minutes of training."""
    import argparse

    args = argparse.Namespace(config="configs/cards.py", minutes=5.0, one_class=False, data=[], extra=[])
    for name, overrides in VARIANTS.items():
        cfg = screen_config(args, overrides or []).finalize()
        assert cfg.val_from_train == 0.2 and cfg.time_budget == 5.0, name


def test_a_fresh_screen_trains_the_baseline_before_scoring_it_with_merge_nms(tmp_path, monkeypatch):
    """On an empty rows.csv the loop must train the baseline first: nms_merge scores that run's checkpoint."""
    import bench.box_screen as screen

    def fake_train(args, name, seed):
        return dict(variant=name, seed=seed, setting=setting(args), map50=0.8, map=0.5, epochs=3, time_s=1,
                    run=str(tmp_path / f"{name}_seed{seed}"))

    def fake_merge(args, seed, baseline):
        return dict(baseline, variant="nms_merge", map=float(baseline["map"]) + 0.01)

    monkeypatch.setattr(screen, "train_variant", fake_train)
    monkeypatch.setattr(screen, "merge_nms_row", fake_merge)
    monkeypatch.setattr(sys, "argv", ["box_screen.py", "--config", "configs/cards.py", "--seeds", "0,1",
                                      "--variants", "nms_merge,ema", "--out", str(tmp_path)])
    monkeypatch.chdir(tmp_path)  # main() moves to the repository; monkeypatch moves back
    screen.main()
    rows = screen.read_rows(tmp_path / "rows.csv")
    assert [(r["variant"], r["seed"]) for r in rows] == [("baseline", "0"), ("nms_merge", "0"), ("ema", "0"),
                                                         ("baseline", "1"), ("nms_merge", "1"), ("ema", "1")]
    assert float(rows[1]["map"]) == 0.51 and rows[1]["run"] == rows[0]["run"]
    assert rows[4]["run"] == rows[3]["run"] and rows[4]["run"].endswith("baseline_seed1")  # each seed its own baseline


VOC_XML = ("<annotation><filename>{name}.jpg</filename><size><width>100</width><height>80</height><depth>3</depth>"
           "</size><object><name>{label}</name><bndbox><xmin>10</xmin><ymin>10</ymin><xmax>50</xmax><ymax>40</ymax>"
           "</bndbox></object></annotation>")


def test_one_class_screens_a_one_class_copy_and_leaves_the_data_as_it_is(tmp_path):
    from bench.box_screen import one_class_data

    data = tmp_path / "cards"
    for folder, name, label in (("train", "a", "nine"), ("test", "b", "ace")):
        (data / folder).mkdir(parents=True)
        (data / folder / f"{name}.xml").write_text(VOC_XML.format(name=name, label=label))
        (data / folder / f"{name}.jpg").write_bytes(b"not decoded here")
    config = tmp_path / "my_cards.py"
    config.write_text("from yolo.config import BaseConfig\n\n\nclass MyCards(BaseConfig):\n"
                      "    def __init__(self):\n        super().__init__()\n"
                      f"        self.dataset, self.data_root = 'voc', {str(data)!r}\n"
                      "        self.ann_dir, self.img_dir = '', ''\n"
                      "        self.train_dirs, self.val_dirs = ['train'], ['test']\n"
                      "        self.class_names = ['nine', 'ace']\n")
    before = {p: p.read_bytes() for p in data.rglob("*") if p.is_file()}
    args = argparse.Namespace(config=str(config), out=tmp_path / "out", minutes=5.0, one_class=True, extra=[])
    args.data = one_class_data(args)
    cfg = screen_config(args, [])
    copy = tmp_path / "out" / "one_class_data"
    assert cfg.data_root == str(copy) and cfg.class_names == ["card"] and "one class" in setting(args)
    assert "<name>card</name>" in (copy / "test" / "b.xml").read_text()
    assert (copy / "train" / "a.jpg").resolve() == (data / "train" / "a.jpg").resolve()  # linked, not copied
    assert {p: p.read_bytes() for p in data.rglob("*") if p.is_file()} == before


def test_one_class_refuses_a_config_without_voc_train_and_test_folders(tmp_path):
    import pytest

    from bench.box_screen import one_class_data

    args = argparse.Namespace(config="configs/my_config.py", out=tmp_path, minutes=5.0, one_class=True, extra=[])
    with pytest.raises(SystemExit, match="--one_class needs a VOC config"):
        one_class_data(args)
