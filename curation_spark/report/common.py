"""Names every module of the report shares: the label column, the seed, the order of labels."""
from __future__ import annotations

#: Ground-truth column compared between input and curated set when the input has it.
LABEL_COL = "label"
#: Seed of the report's samples (Spark) and of the scatter jitter (numpy): the same run
#: draws the same figures.
SEED = 0


def sorted_keys(keys: set) -> list:
    """Label values in order (by their text when they do not compare, e.g. mixed types)."""
    try:
        return sorted(keys)
    except TypeError:
        return sorted(keys, key=str)
