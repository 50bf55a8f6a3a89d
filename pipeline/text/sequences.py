"""Padding with the semantics of `keras.utils.pad_sequences`, in NumPy.

Written here rather than imported so that the pad stage and `predict`'s
preprocessing do not import TensorFlow; tests check it against Keras.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

SIDES = ("pre", "post")


def pad_sequences(sequences: Sequence[Sequence[int]], maxlen: int, padding: str = "pre",
                  truncating: str = "pre", value: int = 0, dtype=np.int32) -> np.ndarray:
    if padding not in SIDES or truncating not in SIDES:
        raise ValueError(f"padding and truncating must be 'pre' or 'post', got {padding!r}, {truncating!r}")
    out = np.full((len(sequences), maxlen), value, dtype=dtype)
    if maxlen <= 0:
        return out
    for i, seq in enumerate(sequences):
        if not len(seq):
            continue
        seq = seq[-maxlen:] if truncating == "pre" else seq[:maxlen]
        if padding == "post":
            out[i, : len(seq)] = seq
        else:
            out[i, -len(seq):] = seq
    return out


def length_for_coverage(lengths: Sequence[int], coverage: float) -> int:
    """Smallest maxlen such that at least `coverage` of the sequences fit untruncated."""
    if not 0 < coverage <= 1:
        raise ValueError(f"coverage must be in (0, 1], got {coverage}")
    ordered = np.sort(np.asarray(lengths))
    if ordered.size == 0:
        return 1
    index = max(0, math.ceil(coverage * ordered.size) - 1)
    return max(1, int(ordered[index]))
