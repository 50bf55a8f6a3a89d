"""Fitting a student: a network trained on gold labels and a teacher's probabilities (soft targets) at once,
each row with its weight - what the distill stage (one corpus, its ensemble teaching) and the student stage
(every corpus, the router teaching) share.

The loss is binary cross-entropy against the target, so a teacher's 0.7 asks for 0.7, and the metric is
agreement with the rounded target (on the validation rows, gold labels: accuracy). Batches group rows of
similar length (pipeline.text.sequences.length_batches), as the train stage's do.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np


def _batches(x: np.ndarray, y: np.ndarray, w: np.ndarray | None, batch_size: int, rng):
    from pipeline.text.sequences import length_batches, trim_padding

    for idx in length_batches(x, batch_size, rng):
        yield (trim_padding(x[idx]), y[idx]) + ((w[idx],) if w is not None else ())


def fit_student(x, y, w, val_x, val_y, val_w, preprocessor, vectors: list[Path], params: dict, checkpoint: Path,
                label: str, threshold: float = 0.5, parent: tuple[Path, np.ndarray] | None = None):
    """A new network (`params["architecture"]`: the MODEL_PARAMS and batch_size, seeded by `params["seed"]`) fitted
    on ids `x`, targets `y` (gold 0/1 or a teacher's probability) and row weights `w`; early stopping and the
    checkpoint on the validation rows' loss, weighted by `val_w` (None: equally). Its Embedding starts from the
    pretrain stage's `vectors` files (a token's vector from the first file that has it); with `parent` (a bundle's
    model.keras and its ids' rows here: pipeline.model.training.start_from), every weight starts from that trained
    network instead, where it has one. Returns (model, history, epoch timer, seconds, how many Embedding rows came
    from vectors or the parent)."""
    from pipeline.core.quiet import import_keras
    from pipeline.model import training

    keras = import_keras()              # first: TensorFlow's start-up log stays off stderr
    import tensorflow as tf

    from pipeline.text.sequences import length_batch_count

    arch = params["architecture"]

    def accuracy(y_true, y_pred):        # agreement with the rounded target: accuracy on gold labels
        # one value per review (not a batch mean), so Keras averages over reviews, not over batches of
        # unequal size; >= threshold as ksent labels a probability
        y_true, y_pred = keras.ops.reshape(y_true, (-1,)), keras.ops.reshape(y_pred, (-1,))
        return keras.ops.cast(keras.ops.equal(y_true >= threshold, y_pred >= threshold), "float32")

    model, pretrained_rows = training.new_model(preprocessor, arch, params["seed"], vectors or None, label,
                                                metrics=[accuracy])
    if val_w is not None:           # Keras weighs `metrics` by nothing, `weighted_metrics` by the rows' weights
        model.compile(optimizer=keras.optimizers.Adam(arch["learning_rate"]), loss="binary_crossentropy",
                      weighted_metrics=[accuracy])
    if parent is not None:
        pretrained_rows = training.start_from(model, parent[0], parent[1], label)
    rng = np.random.default_rng(params["seed"])
    spec = (tf.TensorSpec((None, None), tf.int32), tf.TensorSpec((None,), tf.float32))
    weight = (tf.TensorSpec((None,), tf.float32),)
    batch = arch["batch_size"]
    train_ds = tf.data.Dataset.from_generator(lambda: _batches(x, y, w, batch, rng), output_signature=(
        *spec, *weight)).apply(tf.data.experimental.assert_cardinality(length_batch_count(len(x), batch))).prefetch(2)
    val_y = np.asarray(val_y, dtype=np.float32)
    val_batch = max(batch, 1024)
    val_ds = tf.data.Dataset.from_generator(lambda: _batches(val_x, val_y, val_w, val_batch, None),
                                            output_signature=spec + (weight if val_w is not None else ())).apply(
        tf.data.experimental.assert_cardinality(length_batch_count(len(val_y), val_batch)))
    history, timer, seconds = training.fit(model, train_ds, val_ds, params, checkpoint, label)
    return model, history, timer, seconds, pretrained_rows
