"""How balanced a labelled set is: the normalised label entropy.

It lives in the method layer (numpy only) because both the report and the demo measure the
balance of a curated set with it, and neither should import the synthetic-data generator
(``synth``, which re-exports it for its existing callers) to do so.
"""
from __future__ import annotations

import math
import numbers

import numpy as np

__all__ = ["label_entropy"]


def label_entropy(labels: np.ndarray, n_labels: int | None = None) -> float:
    """Normalised Shannon entropy of the label histogram, in ``[0, 1]``.

    Measures how balanced a (curated) set is over the ground-truth labels:
    1.0 means every label is equally represented, 0.0 means a single label.
    Labels of ``n_labels`` classes that never occur count as empty bins, so
    pass ``n_labels`` explicitly to penalise missing classes.

    Parameters
    ----------
    labels : array-like
        Ground-truth labels (any hashable dtype numpy can sort).
    n_labels : int, optional
        Number of possible labels; defaults to the number of distinct values
        in ``labels``.  Must be >= that number.

    Returns
    -------
    float
        ``H / log(n_labels)`` with ``H`` the natural-log entropy of the
        counts.  When ``n_labels <= 1`` the normalisation is undefined
        (0 / 0) and 1.0 is returned: a distribution over one class is
        trivially uniform.
    """
    arr = np.asarray(labels).reshape(-1)
    if arr.size == 0:
        raise ValueError("labels must be non-empty")
    _, counts = np.unique(arr, return_counts=True)
    if n_labels is None:
        k = len(counts)
    else:
        if isinstance(n_labels, bool) or not isinstance(n_labels, numbers.Integral) or n_labels <= 0:
            raise ValueError(f"n_labels must be a positive integer, got {n_labels!r}")
        k = int(n_labels)
        if k < len(counts):
            raise ValueError(
                f"n_labels={k} is smaller than the {len(counts)} distinct labels present"
            )
    if k <= 1:
        return 1.0
    p = counts / counts.sum()
    h = float(-(p * np.log(p)).sum())
    return float(min(1.0, max(0.0, h / math.log(k))))
