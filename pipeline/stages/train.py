"""train: fit the network on the train split, stop early on the validation split, save the bundle.

Inputs: data/processed/<corpus>/<tok>/train.parquet, val.parquet and tokenizer.json (pad stage).
Outputs in artifacts/<corpus>-<tok>/: model.keras (the weights of the epoch with the lowest
validation loss, kept by ModelCheckpoint; no optimizer state), model.onnx (the same network
for TensorFlow-free prediction, checked against Keras on the validation split; see
pipeline.predict.runtime), model.int8.onnx (its int8 copy, for `--runtime onnx-int8`, when the
network is a fused LSTM), a copy of tokenizer.json,
bundle.json (what ties the two together, see pipeline.predict.bundle), history.csv (per-epoch
loss/accuracy/learning rate/seconds) and curves.png.

The Embedding layer starts from the pretrain stage's vectors.npz (token vectors learned from
the train split plus unlabeled reviews, pipeline.model.embeddings); `embeddings="random"` skips that.

Batches are groups of similar-length reviews without their all-padding columns
(pipeline.text.sequences.length_batches): on CPU the recurrent loop costs as much per padding
step as per token, and most of a padded NSMC row is padding.

The splits are streamed (`SplitReader`): read in shards of whole row groups of at most
`shard_mb` MB of ids, one shard in memory at a time, so a training set larger than memory
trains. A split that fits in one shard is batched exactly as if it were loaded whole.
"""
from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline import layout, params as defaults
from pipeline.core.files import read_json, sha256_file
from pipeline.core.quiet import import_keras  # keras itself is imported when a model is built, not on import
from pipeline.core.stage import Input, Stage, StageResult, Staging, Target, run_stage
from pipeline.core.tables import unreadable
from pipeline.errors import PipelineError
from pipeline.model import padded, training
from pipeline.stages import ADAPT_PARAMS, NETWORK_SHAPE, bundle_producer, init_parent, student_architecture


class SplitReader:
    """A split table of the pad stage (pipeline.model.padded) read in shards: runs of whole row groups
    holding at most `shard_mb` MB of padded ids (at least one row group each)."""

    def __init__(self, path: Path, name: str, label: str, shard_mb: float):
        info = padded.describe(path, label)
        self.path, self.name, self.label = path, name, label
        self.rows, self.maxlen, self.groups = info["rows"], info["maxlen"], len(info["row_groups"])
        group_rows = max((b - a for a, b in info["row_groups"]), default=1)
        self.groups_per_shard = max(1, int(shard_mb * 2**20 // (group_rows * self.maxlen * 4)))

    @property
    def shard_count(self) -> int:
        return -(-self.groups // self.groups_per_shard)

    def shards(self, rng: np.random.Generator | None = None):
        """(x int32, y float32) per shard. With `rng` and more than one shard, the row groups are
        dealt into shards in a fresh random order (per call, i.e. per epoch); otherwise in file order."""
        order = np.arange(self.groups)
        if rng is not None and self.shard_count > 1:
            order = rng.permutation(self.groups)
        for start in range(0, self.groups, self.groups_per_shard):
            arrays = self.read_groups(sorted(order[start:start + self.groups_per_shard].tolist()))
            yield arrays["x"], arrays["label"].astype(np.float32)

    def read_groups(self, groups: list[int], columns: tuple[str, ...] = ("x", "label")) -> dict[str, np.ndarray]:
        import pyarrow.parquet as pq

        try:
            table = pq.ParquetFile(self.path).read_row_groups(groups, columns=list(columns))
        except Exception as exc:  # noqa: BLE001 - pyarrow raises many kinds for a damaged file
            raise unreadable(self.path, "pad", self.label, exc) from None
        return padded.to_arrays(table)

    def check(self, vocab_size: int, maxlen: int) -> None:
        """PipelineError unless the split is non-empty, padded to `maxlen` with ids of the vocabulary, labels 0/1."""
        if self.rows == 0:
            raise PipelineError(f"train: {self.name} split is empty - check the split stage's ratios")
        if self.maxlen != maxlen:
            raise PipelineError(f"train: {self.name}.parquet is padded to {self.maxlen}, tokenizer.json says maxlen "
                                f"{maxlen} - re-run the pad stage")
        for x, y in self.shards():
            if x.min() < 0 or x.max() >= vocab_size:
                raise PipelineError(f"train: {self.name}.parquet has ids outside 0..{vocab_size - 1} "
                                    f"(tokenizer.json's vocabulary) - re-run the pad stage")
            if not np.isin(y, (0, 1)).all():
                raise PipelineError(f"train: {self.name}.parquet has labels other than 0/1")

    def batches(self, batch_size: int, rng: np.random.Generator | None, window: int = 100):
        """Length-grouped, trimmed (x, y) batches, as `length_batches` draws them, shard by shard;
        reshuffled on each call when `rng` is given.

        Each shard's rows are drawn in random order after the rows its predecessor left in an
        unfinished window (fewer than batch_size x window), windows are sorted by length and cut
        into batches, and a shard's batches are shuffled. So every epoch has length_batch_count
        batches, and a split that fits in one shard gets exactly `length_batches`' batches."""
        from pipeline.text.sequences import trim_padding, window_batches

        span = batch_size * window
        carry = (np.zeros((0, self.maxlen), np.int32), np.zeros(0, np.float32))
        for number, (x, y) in enumerate(self.shards(rng), start=1):
            order = rng.permutation(len(x)) if rng is not None else np.arange(len(x))
            drawn = (*carry, x, y, order)
            lengths = np.concatenate([np.count_nonzero(carry[0], axis=1), np.count_nonzero(x, axis=1)[order]])
            done = len(lengths) if number == self.shard_count else len(lengths) - len(lengths) % span
            batches = window_batches(lengths[:done], batch_size, window)
            carry = _take(np.arange(done, len(lengths)), *drawn)
            for i in (rng.permutation(len(batches)) if rng is not None else range(len(batches))):
                bx, by = _take(batches[i], *drawn)
                yield trim_padding(bx), by

    def dataset(self, batch_size: int, rng: np.random.Generator | None):
        """`batches` as a tf.data pipeline (a fresh pass, so a fresh shuffle, per epoch)."""
        import tensorflow as tf

        from pipeline.text.sequences import length_batch_count

        ds = tf.data.Dataset.from_generator(lambda: self.batches(batch_size, rng), output_signature=(
            tf.TensorSpec(shape=(None, None), dtype=tf.int32), tf.TensorSpec(shape=(None,), dtype=tf.float32)))
        return ds.apply(tf.data.experimental.assert_cardinality(length_batch_count(self.rows, batch_size))).prefetch(2)


def _take(positions: np.ndarray, carry_x: np.ndarray, carry_y: np.ndarray, x: np.ndarray, y: np.ndarray,
          order: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows at `positions` of a drawn sequence: the carried rows, then the shard's rows in `order`."""
    n = len(carry_y)
    old, new = positions[positions < n], order[positions[positions >= n] - n]
    return np.concatenate([carry_x[old], x[new]]), np.concatenate([carry_y[old], y[new]])


def validate_params(params: dict, tok: str) -> dict:
    """The defaults for `tok` overridden by `params` (None: the default), each checked (ParameterError)."""
    return defaults.TRAIN.resolve(params, defaults.train_defaults(tok), prefix="train: ")


def plan(corpus: str, tok: str, *, data_dir: Path | str = layout.DATA_DIR,
         artifacts_dir: Path | str = layout.ARTIFACTS_DIR, **params) -> Stage:
    params = validate_params(params, tok)
    src, label = layout.processed_dir(data_dir, corpus, tok), layout.label(corpus, tok)
    inputs = {name: Input(src / name, "pad", label=label) for name in ("train.parquet", "val.parquet",
                                                                       layout.TOKENIZER_FILE)}
    if params["embeddings"] == "pretrained":
        inputs[layout.VECTORS_FILE] = Input(src / layout.VECTORS_FILE, "pretrain", label=label)
    parent = init_parent(corpus, tok, params["init_from"], artifacts_dir, data_dir)
    if parent is None:          # from the vectors: the parameters (and so the manifests) of before --init-from
        params = {k: v for k, v in params.items() if k not in ADAPT_PARAMS}
    else:                       # the parent's network, fine-tuned as a new one trains (docs/experiments.md)
        for name in ("model.keras", layout.BUNDLE_FILE, layout.TOKENIZER_FILE):
            inputs[f"parent {name}"] = Input(parent / name, bundle_producer(parent), label=parent.name, edge=False)
        arch = student_architecture(tok, parent)
        params = {**params, **{k: arch[k] for k in NETWORK_SHAPE}}
    return Stage("train", label, layout.bundle_dir(artifacts_dir, corpus, tok), inputs=inputs,
                 params=params, outputs=("model.keras", "model.onnx", layout.TOKENIZER_FILE, layout.BUNDLE_FILE,
                                         "history.csv", "curves.png"),
                 optional_outputs=("model.int8.onnx",), whole_folder=True)


def plan_for(t: Target) -> Stage:
    return plan(t.corpus, t.tok, data_dir=t.data_dir, artifacts_dir=t.artifacts_dir, **t.train_params)


def run_for(t: Target, **kwargs) -> StageResult:
    return train(t.corpus, t.tok, data_dir=t.data_dir, artifacts_dir=t.artifacts_dir, **kwargs, **t.train_params)


def train(corpus: str, tok: str, *, data_dir: Path | str = layout.DATA_DIR,
          artifacts_dir: Path | str = layout.ARTIFACTS_DIR, force: bool = False,
          echo: Callable[[str], None] | None = None, **params) -> StageResult:
    """Train on <data_dir>/processed/<corpus>/<tok>/ and write the bundle <artifacts_dir>/<corpus>-<tok>/.

    `params` override pipeline.params.train_defaults(tok) (embedding_dim, units, layers, bidirectional,
    cell, dropout, batch_size, epochs, patience, learning_rate, lr_decay, seed). The new
    bundle is built in a staging folder and swapped in whole: a failed or killed run leaves
    the previous bundle as it was.
    """
    stage = plan(corpus, tok, data_dir=data_dir, artifacts_dir=artifacts_dir, **params)
    params = stage.params
    inputs = {name: inp.path for name, inp in stage.inputs.items()}

    def run(out: Staging) -> StageResult:
        import_keras()              # first: TensorFlow's start-up log stays off stderr (the datasets import it)
        from pipeline.predict import bundle

        preprocessor = bundle.load_preprocessor(inputs[layout.TOKENIZER_FILE])
        splits = {name: SplitReader(inputs[f"{name}.parquet"], name, stage.label, params["shard_mb"])
                  for name in ("train", "val")}
        for split in splits.values():
            split.check(preprocessor.vocab_size, preprocessor.maxlen)

        model, pretrained_rows = training.new_model(
            preprocessor, params, params["seed"],
            inputs[layout.VECTORS_FILE] if params["embeddings"] == "pretrained" else None, stage.label)
        parent = None
        if f"parent {layout.BUNDLE_FILE}" in inputs:    # every weight from the parent; its tokens keep their rows
            name = inputs[f"parent {layout.BUNDLE_FILE}"].parent.name
            learned = bundle.load_preprocessor(inputs[f"parent {layout.TOKENIZER_FILE}"])
            if preprocessor.vocabulary.tokens[:len(learned.vocabulary.tokens)] != learned.vocabulary.tokens:
                raise PipelineError(f"train {stage.label}: its padded ids were not made for {name} (the "
                                    f"vocabulary must begin with the parent's) - run `ksent run` with the same "
                                    f"--init-from, or `ksent pad --init-from` first")
            inherited = training.start_from(model, inputs["parent model.keras"],
                                            preprocessor.vocabulary.id_map(learned.vocabulary, missing=-1),
                                            f"train {stage.label}")
            parent = {"name": name, "corpus": read_json(inputs[f"parent {layout.BUNDLE_FILE}"])["corpus"],
                      "bundle_sha256": sha256_file(inputs[f"parent {layout.BUNDLE_FILE}"]),
                      "inherited_rows": inherited}
        n_params = model.count_params()
        rng = np.random.default_rng(params["seed"])
        train_ds = splits["train"].dataset(params["batch_size"], rng)
        val_ds = splits["val"].dataset(max(params["batch_size"], 1024), None)

        checkpoint = out.path("best.weights.h5")            # Keras insists on the suffix
        history, timer, train_seconds = training.fit(model, train_ds, val_ds, params, checkpoint,
                                                     f"train {stage.label}")
        serving = training.save_for_serving(model, checkpoint, out.path("model.keras"))
        checkpoint.unlink(missing_ok=True)
        from pipeline.model.scoring import choose_threshold, threshold_text
        from pipeline.predict.runtime import ONNX_FILE, OnnxNetwork, export_onnx, predict_ids
        # checked against Keras on the whole validation split
        val = splits["val"].read_groups(list(range(splits["val"].groups)))
        onnx_entry = export_onnx(serving, out.path(ONNX_FILE), padding=preprocessor.padding,
                                 check_ids=val["x"], check_labels=val["label"])
        # the decision threshold, chosen on the validation split's probabilities as the bundle will give them
        threshold = choose_threshold(val["label"], predict_ids(OnnxNetwork(out.path(ONNX_FILE)), val["x"]),
                                     params["threshold"])

        shutil.copyfile(inputs[layout.TOKENIZER_FILE], out.path(layout.TOKENIZER_FILE))
        epochs_run = len(history["loss"])
        val_loss = np.asarray(history["val_loss"], dtype=float)
        best = int(np.nanargmin(val_loss)) if np.isfinite(val_loss).any() else epochs_run - 1
        counts = {
            "train_rows": splits["train"].rows, "val_rows": splits["val"].rows,
            "train_shards": splits["train"].shard_count,
            "vocab_size": int(preprocessor.vocab_size), "maxlen": int(preprocessor.maxlen),
            "params": int(n_params), "epochs_run": epochs_run, "best_epoch": best + 1,
            "best_val_loss": round(float(history["val_loss"][best]), 6),
            "best_val_accuracy": round(float(history["val_accuracy"][best]), 6),
            "train_seconds": round(train_seconds, 1), "pretrained_rows": pretrained_rows,
            "seconds_per_epoch": round(float(np.mean(timer.seconds)), 1),
        }
        bundle.write_manifest(out.dir, corpus=corpus, tok=tok, preprocessor=preprocessor, params=n_params,
                              onnx=onnx_entry, threshold=threshold,
                              training={"params": params, **{k: counts[k] for k in (
                                  "epochs_run", "best_epoch", "best_val_loss", "best_val_accuracy",
                                  "train_seconds")}, **({"parent": parent} if parent else {})})
        training.write_history(out.path("history.csv"), history, timer.seconds, params["learning_rate"])
        training.plot_curves(out.path("curves.png"), history, best + 1, f"{corpus} / {tok}")
        counts["threshold"] = threshold["value"]
        summary = (f"train {corpus}/{tok}: best val_acc {counts['best_val_accuracy']:.4f} at epoch "
                   f"{best + 1}/{epochs_run}, {threshold_text(threshold)}, {n_params:,} params, "
                   f"{train_seconds:.0f}s "
                   f"({counts['seconds_per_epoch']:.0f}s/epoch), "
                   + (f"started from {parent['name']} ({parent['inherited_rows']:,} of "
                      f"{preprocessor.vocab_size:,} embedding rows its own)" if parent else
                      f"{pretrained_rows:,} of {preprocessor.vocab_size:,} embedding rows pretrained"
                      if params["embeddings"] == "pretrained" else "random embeddings")
                   + (f"; note: {onnx_entry['note']}" if onnx_entry.get("note") else ""))
        return StageResult(summary=summary, counts=counts)

    return run_stage(stage, run, force=force, echo=echo)
