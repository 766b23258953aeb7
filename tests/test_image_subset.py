"""train_images / val_images: a run on a fixed part of its data (a cheap proxy of the full run, e.g. evolve's trials):
the same images whatever the seed, in file order, the rest of the config unchanged."""
import pytest

from yolo.config import BaseConfig
from yolo.data.dataset import read_records, read_train_val


@pytest.fixture(scope="module")
def shapes_root(tmp_path_factory):
    return str(tmp_path_factory.mktemp("subset") / "shapes")


def config(root, **fields):
    cfg = BaseConfig()
    cfg.data_root, cfg.shapes_num_train, cfg.shapes_num_val, cfg.img_size = root, 12, 6, 64
    for k, v in fields.items():
        setattr(cfg, k, v)
    return cfg.finalize()


def names(records):
    return [r.image_path for r in records]


def test_a_fixed_subset_whatever_the_seed(shapes_root):
    full_train, full_val = read_train_val(config(shapes_root))
    assert (len(full_train), len(full_val)) == (12, 6)
    train, val = read_train_val(config(shapes_root, train_images=5, val_images=3))
    again, _ = read_train_val(config(shapes_root, train_images=5, val_images=3, seed=7))
    assert (len(train), len(val)) == (5, 3) and names(train) == names(again)
    assert set(names(train)) <= set(names(full_train))
    assert names(train) == sorted(names(train), key=names(full_train).index)  # in file order
    assert names(read_records(config(shapes_root, train_images=5), "train")) == names(train)
    assert names(read_records(config(shapes_root, val_images=3), "val")) == names(val)
    assert len(read_records(config(shapes_root, train_images=50), "train")) == 12  # more than there are: all


def test_a_subset_of_a_val_split_carved_from_train(shapes_root):
    train, val = read_train_val(config(shapes_root, val_from_train=0.5, train_images=4, val_images=2))
    full_train, full_val = read_train_val(config(shapes_root, val_from_train=0.5))
    assert set(names(train)) <= set(names(full_train)) and set(names(val)) <= set(names(full_val))
    assert (len(train), len(val)) == (4, 2)


@pytest.mark.parametrize("field, value", [("train_images", -1), ("val_images", 2.5)])
def test_subset_sizes_are_checked(field, value):
    cfg = BaseConfig()
    setattr(cfg, field, value)
    with pytest.raises(ValueError, match=f"config field '{field}'"):
        cfg.finalize()
