"""The network: Embedding(mask_zero) -> LSTM or GRU (stacked, optionally bidirectional) -> P(positive).

Id 0 is padding and is masked, so the recurrent layers skip it: a review gets the
same probability however much padding surrounds it, and a review that cleans to
nothing (all padding) gets the response to an empty sequence, sigmoid(bias of
the output layer) - finite, never NaN.
"""
from __future__ import annotations

import numpy as np

from pipeline.params import TRAIN
from pipeline.quiet import import_keras

keras = import_keras()   # TensorFlow's start-up log stays off the terminal unless KSENT_VERBOSE=1

CELLS = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}


def build_model(vocab_size: int, maxlen: int | None, *, embedding_dim: int = TRAIN["embedding_dim"],
                units: int = TRAIN["units"], layers: int = TRAIN["layers"],
                bidirectional: bool = TRAIN["bidirectional"], dropout: float = TRAIN["dropout"],
                cell: str = TRAIN["cell"], learning_rate: float = TRAIN["learning_rate"]) -> keras.Model:
    """A compiled binary classifier of int32 id sequences of shape (batch, maxlen).

    `maxlen=None` accepts any sequence length: the train stage uses it to feed
    batches of short reviews without their all-padding columns, which the mask
    would skip anyway (same result, a fraction of the work).
    """
    if cell not in CELLS:
        raise ValueError(f"cell must be one of {sorted(CELLS)}, got {cell!r}")
    if layers < 1:
        raise ValueError(f"layers must be at least 1, got {layers}")
    inputs = keras.Input(shape=(maxlen,), dtype="int32", name="ids")
    x = keras.layers.Embedding(vocab_size, embedding_dim, mask_zero=True, name="embedding")(inputs)
    x = keras.layers.Dropout(dropout, name="embedding_dropout")(x)
    for i in range(1, layers + 1):
        recurrent = CELLS[cell](units, return_sequences=i < layers, name=f"{cell}_{i}")
        if bidirectional:
            recurrent = keras.layers.Bidirectional(recurrent, name=f"bi{cell}_{i}")
        x = recurrent(x)
        x = keras.layers.Dropout(dropout, name=f"dropout_{i}")(x)
    outputs = keras.layers.Dense(1, activation="sigmoid", name="positive")(x)
    model = keras.Model(inputs, outputs, name=f"ksent_{cell}")
    model.compile(optimizer=keras.optimizers.Adam(learning_rate), loss="binary_crossentropy",
                  metrics=["accuracy"])
    return model


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
    batches = []
    for start in range(0, len(x), batch_size * window):
        part = order[start:start + batch_size * window]
        part = part[np.argsort(lengths[part], kind="stable")]
        batches.extend(part[i:i + batch_size] for i in range(0, len(part), batch_size))
    if rng is not None:
        batches = [batches[i] for i in rng.permutation(len(batches))]
    return batches


def trim_padding(x: np.ndarray) -> np.ndarray:
    """Drop the leading/trailing columns that are padding (id 0) in every row.

    The mask makes the recurrent layers skip those steps, so the output is unchanged.
    An all-padding batch keeps one column (the model's response to an empty sequence).
    """
    used = np.flatnonzero(x.any(axis=0))
    if used.size == 0:
        return x[:, -1:]
    return x[:, used[0]:used[-1] + 1]
