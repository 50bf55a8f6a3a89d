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
from pipeline.errors import ParameterError

MODEL_PARAMS = ("embedding_dim", "units", "layers", "bidirectional", "dropout", "cell", "learning_rate")


def lr_schedule(factor: float) -> list:
    """Multiply the learning rate by `factor` after every epoch without a lower val_loss (1 = off)."""
    keras = import_keras()
    return [] if factor == 1 else [keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=factor, patience=0)]


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



def pretrained_matrix(path: Path, preprocessor, params: dict, label: str) -> tuple[np.ndarray, int]:
    """The Embedding matrix from the pretrain stage's vectors, rows in the vocabulary's id order."""
    from pipeline.model.embeddings import embedding_matrix
    from pipeline.text.vocab import OOV_ID

    arrays = read_npz(path, "pretrain", label, ("tokens", "vectors"))
    dim = arrays["vectors"].shape[1] if arrays["vectors"].ndim == 2 else None
    if dim != params["embedding_dim"]:
        raise ParameterError(f"train {label}: the pretrained vectors are {dim}-dimensional, the Embedding "
                             f"{params['embedding_dim']} - re-run `ksent pretrain ... --dim "
                             f"{params['embedding_dim']}` or train with --embedding-dim {dim}")
    return embedding_matrix(preprocessor.vocabulary.tokens, arrays["tokens"].tolist(), arrays["vectors"],
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

