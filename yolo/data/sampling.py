"""Class-balanced drawing of training images (config class_balanced).

Each image is weighted by the inverse frequency of its rarest class, frequency meaning the number of training
images that hold the class (LVIS's repeat-factor sampling counts the same way): with a class in 20 images and another
in 200, each image of the rare class weighs 1/20, each image of only the common one 1/200, so both classes are drawn
about equally often. An image without objects weighs as one of the most common class (it still teaches background).
Images are drawn with replacement, one pass = as many draws as there are images.
"""
from collections import Counter

import numpy as np
from torch.utils.data import Sampler


def class_balanced_weights(records):
    """(N,) float64: 1 / (images holding the rarest class of each record); difficult boxes count for nothing, as in
    training."""
    holds = [set(rec.labels[~rec.difficult].tolist()) for rec in records]
    images_per_class = Counter(c for classes in holds for c in classes)
    most_common = max(images_per_class.values(), default=1)
    return np.array([1.0 / min(images_per_class[c] for c in classes) if classes else 1.0 / most_common
                     for classes in holds])


def class_shares(records, class_names, weights):
    """'name a% -> b%' per class: the share of drawn images that hold it, drawn uniformly -> by `weights` (logged)."""
    holds = [set(rec.labels[~rec.difficult].tolist()) for rec in records]
    p = np.asarray(weights, np.float64) / np.sum(weights)
    parts = []
    for c, name in enumerate(class_names):
        has = np.array([c in classes for classes in holds])
        parts.append(f"{name} {100 * has.mean():.0f}% -> {100 * p[has].sum():.0f}%")
    return ", ".join(parts)


class WeightedEpochSampler(Sampler):
    """Draws len(weights) indices with replacement, by weight, from (seed, epoch) alone (call set_epoch), so a resumed
    run draws again what it drew. Under DDP every process makes the same draw, cut to a multiple of num_replicas, and
    takes every num_replicas-th index from its rank on: together the processes cover one pass, each the same count."""

    def __init__(self, weights, num_replicas=1, rank=0, seed=0):
        weights = np.asarray(weights, np.float64)
        self.p = weights / weights.sum()
        self.num_replicas, self.rank, self.seed, self.epoch = num_replicas, rank, seed, 0
        self.total = len(weights) // num_replicas * num_replicas

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        drawn = rng.choice(len(self.p), size=self.total, p=self.p)
        return iter(drawn[self.rank::self.num_replicas].tolist())

    def __len__(self):
        return self.total // self.num_replicas
