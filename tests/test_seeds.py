"""One seed rule (curation_spark.method.seeds): distinct keys give distinct streams."""
from __future__ import annotations

import itertools

import numpy as np
import pytest

from curation_spark.method import seeds
from curation_spark.curation import hierarchy
from curation_spark.config import load_config


def test_distinct_keys_give_distinct_seeds_and_streams():
    keys = [(t, level, extra) for t, level, extra in itertools.product(
        (seeds.KMEANS, seeds.RESAMPLING_ORDER, seeds.SPLIT), range(1, 5), range(0, 40))]
    values = [seeds.derive_seed(0, *k) for k in keys] + [seeds.derive_seed(1, *k) for k in keys]
    assert len(set(values)) == len(values)
    assert all(0 <= v < 2 ** 62 for v in values)
    # keys that padding or word splitting would merge stay apart
    for a, b in [((), (0,)), ((1, 2 ** 32), (1 + 2 ** 64 // 2 ** 32,)), ((5,), (5, 0, 0))]:
        assert seeds.derive_seed(3, *a) != seeds.derive_seed(3, *b)
        assert seeds.seeded_rng(3, *a).integers(2 ** 62) != seeds.seeded_rng(3, *b).integers(2 ** 62)
    assert seeds.derive_seed(7, 1, 2) == seeds.derive_seed(7, 1, 2)  # a function of the keys alone
    with pytest.raises(ValueError, match="keys\\[0\\]"):
        seeds.derive_seed(0, 2 ** 63)


def test_hierarchy_seeds_no_longer_collide():
    """The old offsets gave a level-1 split of parent 31 and a level-2 split of parent 0
    the same seed (seed + 31 * level + parent)."""
    cfg = load_config(overrides=["input.path=/tmp/in", "output.path=/tmp/out", "clustering.n_levels=2", "clustering.n_clusters=[40,4]",
                                 "clustering.seed=0", "clustering.distance=l2"]).clustering
    level1 = seeds.for_parent(hierarchy.split_seed(cfg, 1), 31)
    level2 = seeds.for_parent(hierarchy.split_seed(cfg, 2), 0)
    assert level1 != level2
    all_seeds = {hierarchy.resampling_seed(cfg, level, step) for level in (1, 2) for step in range(1, 6)}
    all_seeds |= {hierarchy.level_params(cfg, level, 4, seed_offset=step).seed for level in (1, 2) for step in range(6)}
    all_seeds |= {hierarchy.split_seed(cfg, level) for level in (1, 2)}
    assert len(all_seeds) == 2 * 5 + 2 * 6 + 2
