"""Padded id sequences in NumPy: padding with the semantics of `keras.utils.pad_sequences`, and
the length-grouped, trimmed batches that training and prediction feed the network.

Written here rather than imported so that the pad stage and prediction do not import
TensorFlow; tests check the padding against Keras.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

SIDES = ("pre", "post")
MAXLEN_LIMIT = 10_000       # tokens; longer sequences are no review (predict caps reviews at 10,000 characters)


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


# --- feeding the network: batches of similar length, without their all-padding columns ------------
# Keras 3 on TensorFlow runs LSTM/GRU on CPU as a generic step loop (the fused cuDNN kernel is GPU
# only), and a masked padding step costs as much as a real one. Reviews are short next to maxlen
# (NSMC morphemes: mean 18, maxlen 55), so grouping rows by length and dropping the columns that are
# padding in every row of a batch does the same computation in about a third of the time.

def length_batches(x: np.ndarray, batch_size: int, rng: np.random.Generator | None = None,
                   window: int = 100) -> list[np.ndarray]:
    """Row indices of batches of similar-length rows of the padded id matrix `x`.

    With `rng`: rows are shuffled, sorted by length within windows of `window` batches,
    and the batch order is shuffled (a fresh draw per call, i.e. per epoch). Without:
    deterministic, for prediction.
    """
    lengths = np.count_nonzero(x, axis=1)
    order = rng.permutation(len(x)) if rng is not None else np.arange(len(x))
    batches = [order[positions] for positions in window_batches(lengths[order], batch_size, window)]
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def window_batches(lengths: np.ndarray, batch_size: int, window: int = 100) -> list[np.ndarray]:
    """Positions in `lengths` (a sequence of rows' lengths, in the order drawn) cut into batches
    of similar length: sorted by length within each run of `window` batches."""
    batches = []
    for start in range(0, len(lengths), batch_size * window):
        part = start + np.argsort(lengths[start:start + batch_size * window], kind="stable")
        batches.extend(part[i:i + batch_size] for i in range(0, len(part), batch_size))
    return batches


def length_batch_count(rows: int, batch_size: int, window: int = 100) -> int:
    """len(length_batches(x, batch_size, window=window)) for an `x` of `rows` rows."""
    full, rest = divmod(rows, batch_size * window)
    return full * window + math.ceil(rest / batch_size)


def trim_padding(x: np.ndarray) -> np.ndarray:
    """Drop the leading/trailing columns that are padding (id 0) in every row.

    The mask makes the recurrent layers skip those steps, so the output is unchanged.
    An all-padding batch keeps one column (the model's response to an empty sequence).
    """
    used = np.flatnonzero(x.any(axis=0))
    if used.size == 0:
        return x[:, -1:]
    return x[:, used[0]:used[-1] + 1]
