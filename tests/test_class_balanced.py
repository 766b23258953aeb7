"""Class-balanced drawing (config class_balanced): image weights from the inverse frequency of their rarest class,
the sampler's frequencies on a hand-made skewed dataset, its shards under DDP, and the built-in generator's class
frequencies (shapes_class_weights) that make a skewed task."""
from collections import Counter

import numpy as np
import pytest

from yolo.config import BaseConfig, task_configs
from yolo.data.records import Record
from yolo.data.sampling import WeightedEpochSampler, class_balanced_weights
from yolo.data.shapes import render_dataset_image
from yolo.engine.distributed import DistInfo, train_sampler


def record(*labels, difficult=()):
    labels = np.array(labels, np.int64)
    hard = np.array([i in difficult for i in range(len(labels))], bool)
    return Record("x.jpg", 100, 100, np.tile(np.float32([10, 10, 50, 50]), (len(labels), 1)), labels, hard)


# 80 images of class 0 alone, 10 of class 1 alone, 10 holding both, 5 empty; a difficult box counts for nothing
SKEWED = ([record(0) for _ in range(80)] + [record(1) for _ in range(10)] + [record(0, 1) for _ in range(10)]
          + [record() for _ in range(5)] + [record(0, 1, difficult=(1,))])


def test_weights_are_the_inverse_frequency_of_the_rarest_class():
    weights = class_balanced_weights(SKEWED)
    # images holding class 0: 80 + 10 + 1 = 91; class 1: 10 + 10 = 20
    assert weights[0] == pytest.approx(1 / 91) and weights[80] == pytest.approx(1 / 20)
    assert weights[90] == pytest.approx(1 / 20)          # both classes: its rarest, class 1
    assert weights[100] == pytest.approx(1 / 91)         # empty: as the most common class
    assert weights[105] == pytest.approx(1 / 91)         # its class-1 box is difficult: a class-0 image


def test_sampler_draws_the_rare_class_as_often_as_the_common_one():
    sampler = WeightedEpochSampler(class_balanced_weights(SKEWED), seed=0)
    holds = [set(r.labels[~r.difficult].tolist()) for r in SKEWED]
    draws = []
    for epoch in range(40):  # 40 passes of 106 draws
        sampler.set_epoch(epoch)
        drawn = list(sampler)
        assert len(drawn) == len(sampler) == len(SKEWED)
        draws += drawn
    share = Counter(c for i in draws for c in holds[i])
    images_with_1 = share[1] / len(draws)
    # drawn uniformly, 19 % of the images would hold class 1. By weight: the 20 images holding it weigh 20 / 20,
    # the 80 + 1 others of class 0 and the 5 empty ones 86 / 91; the 10 with both classes weigh 10 / 20
    total = 1 + 86 / 91
    assert images_with_1 == pytest.approx(1 / total, abs=0.03)                         # 0.51
    assert share[0] / len(draws) == pytest.approx((81 / 91 + 10 / 20) / total, abs=0.03)  # 0.71
    sampler.set_epoch(3)
    again = list(sampler)
    sampler.set_epoch(3)
    assert list(sampler) == again  # (seed, epoch) alone decide a pass: a resumed run draws it again


def test_distributed_shards_split_one_draw():
    weights = class_balanced_weights(SKEWED)
    whole = WeightedEpochSampler(weights, seed=5)
    shards = [WeightedEpochSampler(weights, num_replicas=3, rank=r, seed=5) for r in range(3)]
    for s in (whole, *shards):
        s.set_epoch(2)
    parts = [list(s) for s in shards]
    assert [len(p) for p in parts] == [len(s) for s in shards] == [35, 35, 35]  # 106 cut to a multiple of 3
    drawn = list(whole)
    assert [i for triple in zip(*parts) for i in triple] == drawn[:105]


def test_train_sampler_draws_by_weight_when_class_balanced():
    weights = class_balanced_weights(SKEWED)
    single = train_sampler(SKEWED, DistInfo(), seed=0, weights=weights)
    assert isinstance(single, WeightedEpochSampler) and len(single) == len(SKEWED)
    ddp = train_sampler(SKEWED, DistInfo(rank=1, world_size=2), seed=0, weights=weights)
    assert isinstance(ddp, WeightedEpochSampler) and len(ddp) == 53
    assert train_sampler(SKEWED, DistInfo(), seed=0) is None  # plain shuffling otherwise


def test_class_balanced_is_a_task_field():
    cfg = BaseConfig()
    cfg.tasks = [dict(name="a", class_balanced=True), dict(name="b")]
    cfg.finalize()
    assert [t.class_balanced for t in task_configs(cfg)] == [True, False]
    cfg.class_balanced = True
    assert [t.class_balanced for t in task_configs(cfg.finalize())] == [True, True]


# ------------------------------------------------------------------------------------------------- skewed shapes
def test_shapes_class_weights_make_one_class_rarer():
    names = ("circle", "square", "triangle")
    counts = Counter()
    for i in range(60):
        _, _, labels = render_dataset_image(0, "train", i, names, class_weights=(1.0, 1.0, 0.1))
        counts.update(labels.tolist())
    assert counts[2] * 4 < min(counts[0], counts[1]) and counts[2] > 0
    # no weights: the images are those the generator always drew
    plain = render_dataset_image(0, "train", 3, names)
    same = render_dataset_image(0, "train", 3, names, class_weights=None)
    assert np.array_equal(plain[0], same[0]) and np.array_equal(plain[2], same[2])


@pytest.mark.parametrize("weights", [[1.0, 1.0], [1.0, -1.0, 1.0], [0.0, 0.0, 0.0], "1,1,0.1"])
def test_bad_shapes_class_weights_are_refused(weights):
    cfg = BaseConfig()
    cfg.shapes_class_weights = weights
    with pytest.raises(ValueError, match="config field 'shapes_class_weights' = .* must be None or one number >= 0 "
                                         "per class"):
        cfg.finalize()
