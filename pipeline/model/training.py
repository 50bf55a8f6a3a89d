"""What the train and distill stages share to fit a network: callbacks (learning-rate decay, epoch
timing, progress), the Embedding's start from pretrained vectors, saving the best weights for
serving, and the history table and curves.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from pipeline.core.quiet import import_keras
from pipeline.core.tables import read_npz
from pipeline.errors import ParameterError, PipelineError

MODEL_PARAMS = ("embedding_dim", "units", "layers", "bidirectional", "dropout", "cell", "learning_rate")


def new_model(preprocessor, arch: dict, seed: int, vectors: Path | list[Path] | None, label: str,
              metrics: list | None = None):
    """The network to fit, seeded (`arch`: the MODEL_PARAMS), its Embedding started from the pretrain stage's
    `vectors` when given (several files: a token's vector from the first that has it); and how many of its rows
    those vectors gave."""
    from pipeline.model.network import build_model

    keras = import_keras()
    keras.utils.set_random_seed(seed)
    model = build_model(preprocessor.vocab_size, None, metrics=metrics, **{k: arch[k] for k in MODEL_PARAMS})
    pretrained_rows = 0
    if vectors is not None:
        matrix, pretrained_rows = pretrained_matrix(vectors, preprocessor, {**arch, "seed": seed}, label)
        model.get_layer("embedding").set_weights([matrix])
    return model, pretrained_rows


def start_from(model, parent: Path, rows: np.ndarray, label: str) -> int:
    """Start `model` from the network saved at `parent` (a bundle's model.keras, same layers): every layer's weights
    copied by name, and the Embedding's row rows[i] from the parent's row i (the parent's ids in `model`'s
    vocabulary, padding and OOV included; -1: no such row). The rows not copied keep their start. Returns how many
    rows were copied."""
    keras = import_keras()
    try:
        old = keras.models.load_model(parent, compile=False)
    except (OSError, ValueError) as exc:
        raise PipelineError(f"{label}: cannot start from {parent} ({exc})") from None
    rows = np.asarray(rows)
    copied = 0
    for layer in model.layers:
        if not layer.weights:
            continue
        try:
            weights = old.get_layer(layer.name).get_weights()
        except ValueError:
            raise PipelineError(f"{label}: {parent} has no layer {layer.name!r} - not the same network") from None
        if layer.name == "embedding":
            matrix = layer.get_weights()[0]
            keep = np.flatnonzero(rows >= 0)
            if matrix.shape[1] != weights[0].shape[1] or len(rows) != len(weights[0]):
                raise PipelineError(f"{label}: {parent}'s Embedding is {weights[0].shape}, the new one "
                                    f"{matrix.shape} - not the same network")
            matrix[rows[keep]] = weights[0][keep]
            weights, copied = [matrix], len(keep)
        elif [w.shape for w in weights] != [tuple(w.shape) for w in layer.weights]:
            raise PipelineError(f"{label}: {parent}'s layer {layer.name!r} has other shapes - not the same network")
        layer.set_weights(weights)
    return copied


def fit(model, train_ds, val_ds, params: dict, checkpoint: Path, label: str):
    """`model.fit` as every ksent network is fitted: early stopping on val_loss with the best weights restored
    (and checkpointed to `checkpoint`), the learning-rate decay, epoch times, progress; `params`: epochs,
    patience, lr_decay, lr_cuts (optional). (history, the EpochTimer, seconds); PipelineError when no epoch ran."""
    keras = import_keras()
    timer = epoch_timer()
    started = time.perf_counter()
    history = model.fit(
        train_ds, validation_data=val_ds, epochs=params["epochs"], shuffle=False,
        verbose=0,                                       # progress(): one line on a terminal, one per epoch in a log
        callbacks=[keras.callbacks.EarlyStopping(monitor="val_loss", patience=params["patience"],
                                                 restore_best_weights=True),
                   keras.callbacks.ModelCheckpoint(checkpoint, monitor="val_loss", save_best_only=True,
                                                   save_weights_only=True),
                   *lr_schedule(params["lr_decay"], params.get("lr_cuts", 0)), timer,
                   progress(label, params["epochs"], steps(train_ds))]).history
    seconds = time.perf_counter() - started
    if not history.get("loss") or not history.get("val_loss"):
        raise PipelineError(f"{label}: training ran no epoch - nothing was published")
    return history, timer, seconds


def lr_schedule(factor: float, cuts: int = 0) -> list:
    """Multiply the learning rate by `factor` after every epoch without a lower val_loss (1 = off); with `cuts`,
    stop training once it has been cut that many times (0 = no limit)."""
    keras = import_keras()
    if factor == 1:
        return []

    class LrCutLimit(keras.callbacks.Callback):     # after ReduceLROnPlateau in the list: sees this epoch's cut
        def on_train_begin(self, logs=None):
            self.rate, self.cuts = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate)), 0

        def on_epoch_end(self, epoch, logs=None):
            rate = float(keras.ops.convert_to_numpy(self.model.optimizer.learning_rate))
            if rate < self.rate:
                self.rate, self.cuts = rate, self.cuts + 1
                if self.cuts >= cuts:
                    self.model.stop_training = True

    return [keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=factor, patience=0),
            *([LrCutLimit()] if cuts else [])]


def epoch_timer():
    """A callback that records the seconds of each epoch in `.seconds`."""
    keras = import_keras()
    class EpochTimer(keras.callbacks.Callback):
        def __init__(self):
            super().__init__()
            self.seconds: list[float] = []

        def on_epoch_begin(self, epoch, logs=None):
            self._started = time.perf_counter()

        def on_epoch_end(self, epoch, logs=None):
            self.seconds.append(time.perf_counter() - self._started)

    return EpochTimer()


def steps(dataset) -> int | None:
    try:
        return len(dataset)
    except TypeError:                                   # a generator-backed dataset: batches not known ahead
        return None


def progress(label: str, epochs: int, steps: int | None):
    """Training progress (pipeline.core.progress): batches live on a terminal, one line per epoch."""
    from pipeline.core.progress import Progress

    keras = import_keras()
    shown = Progress()

    class EpochProgress(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._epoch, self._started, self._drawn = epoch + 1, time.perf_counter(), 0.0

        def on_train_batch_end(self, batch, logs=None):
            now = time.perf_counter()
            if shown.tty and now - self._drawn >= 0.5:      # redraw twice a second, no faster
                self._drawn = now
                loss = (logs or {}).get("loss")
                shown.transient(f"  {label}: epoch {self._epoch}/{epochs}, batch {batch + 1}"
                                + (f"/{steps}" if steps else "") + (f", loss {loss:.4f}" if loss is not None else ""))

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            figures = ", ".join(f"{k} {logs[k]:.4f}" for k in ("loss", "accuracy", "val_loss", "val_accuracy")
                                if k in logs)
            shown.line(f"  {label}: epoch {self._epoch}/{epochs}: {figures} "
                       f"({time.perf_counter() - self._started:.0f} s)")

        def on_train_end(self, logs=None):
            shown.close()

    return EpochProgress()


def plot_curves(path: Path, history: dict, best_epoch: int, title: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    epochs = np.arange(1, len(history["loss"]) + 1)
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        ax.plot(epochs, history[metric], "o-", label="train")
        ax.plot(epochs, history[f"val_{metric}"], "o-", label="validation")
        ax.axvline(best_epoch, color="grey", linestyle=":", label=f"best epoch ({best_epoch})")
        ax.set(xlabel="epoch", ylabel=metric, title=f"{title}: {metric}")
        ax.set_xticks(epochs)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)



def pretrained_matrix(paths: Path | list[Path], preprocessor, params: dict, label: str) -> tuple[np.ndarray, int]:
    """The Embedding matrix from the pretrain stage's vectors, rows in the vocabulary's id order; from several
    files (each corpus's), a token's vector is the first file's that has it."""
    from pipeline.model.embeddings import embedding_matrix
    from pipeline.text.vocab import OOV_ID

    tokens, vectors = [], []
    for path in [paths] if isinstance(paths, Path) else paths:
        arrays = read_npz(path, "pretrain", label, ("tokens", "vectors"))
        dim = arrays["vectors"].shape[1] if arrays["vectors"].ndim == 2 else None
        if dim != params["embedding_dim"]:
            raise ParameterError(f"train {label}: the pretrained vectors are {dim}-dimensional, the Embedding "
                                 f"{params['embedding_dim']} - re-run `ksent pretrain ... --dim "
                                 f"{params['embedding_dim']}` or train with --embedding-dim {dim}")
        names, known = arrays["tokens"].tolist(), set(tokens)
        new = [i for i, tok in enumerate(names) if tok not in known]
        tokens += [names[i] for i in new]
        vectors.append(arrays["vectors"] if len(new) == len(names) else arrays["vectors"][new])
    return embedding_matrix(preprocessor.vocabulary.tokens, tokens,
                            np.concatenate(vectors) if vectors else np.zeros((0, params["embedding_dim"])),
                            reserved=OOV_ID + 1, seed=params["seed"])


def save_for_serving(model, checkpoint: Path, target: Path):
    """Save the checkpointed best weights in an uncompiled view of `model` (a keras.Model).

    Without the optimizer's state (Adam keeps two more values per weight) the file is a
    third of the size and loads faster; predicting needs only architecture and weights.
    """
    keras = import_keras()
    serving = keras.Model(model.inputs, model.outputs, name=model.name)   # same layers, not compiled
    if checkpoint.is_file():
        serving.load_weights(checkpoint)
    else:                                   # val_loss never finite: keep the last weights
        serving.set_weights(model.get_weights())
    serving.save(target)                    # into the staging folder: published with the rest of the bundle
    return serving


def write_history(path: Path, history: dict, epoch_seconds: list[float], learning_rate: float) -> None:
    import pandas as pd

    table = pd.DataFrame({"epoch": np.arange(1, len(history["loss"]) + 1)})
    for key in ("loss", "accuracy", "val_loss", "val_accuracy"):
        table[key] = history[key]
    table["learning_rate"] = history.get("learning_rate", learning_rate)       # logged when it can change
    table["seconds"] = np.round(epoch_seconds[:len(table)], 2)
    table.to_csv(path, index=False)

