"""The network: Embedding(mask_zero) -> LSTM or GRU (stacked, optionally bidirectional) -> P(positive).

Id 0 is padding and is masked, so the recurrent layers skip it: a review gets the
same probability however much padding surrounds it, and a review that cleans to
nothing (all padding) gets the response to an empty sequence, sigmoid(bias of
the output layer) - finite, never NaN.
"""
from __future__ import annotations

from pipeline.core.quiet import import_keras
from pipeline.params import TRAIN

keras = import_keras()   # TensorFlow's start-up log stays off the terminal unless KSENT_VERBOSE=1

CELLS = {"lstm": keras.layers.LSTM, "gru": keras.layers.GRU}


def build_model(vocab_size: int, maxlen: int | None, *, embedding_dim: int = TRAIN["embedding_dim"],
                units: int = TRAIN["units"], layers: int = TRAIN["layers"],
                bidirectional: bool = TRAIN["bidirectional"], dropout: float = TRAIN["dropout"],
                cell: str = TRAIN["cell"], learning_rate: float = TRAIN["learning_rate"],
                metrics: list | None = None) -> keras.Model:
    """A compiled binary classifier of int32 id sequences of shape (batch, maxlen).

    `maxlen=None` accepts any sequence length: the train stage uses it to feed
    batches of short reviews without their all-padding columns, which the mask
    would skip anyway (same result, a fraction of the work). `metrics`: Keras's, default accuracy.
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
                  metrics=metrics or ["accuracy"])
    return model
