"""Streamed training data (issue 11): peak memory of the train stage against the size of its
training split, read in shards (`--shard-mb`) or whole (one shard as large as the split).

For each size it writes a synthetic padded split as the pad stage does (pipeline.model.padded:
row groups of 20,000 rows, maxlen 55, lengths and ids drawn like NSMC morphemes: mean ~18
tokens, Zipf-like ids; each row ends in a "sentiment" id that gives its label away 9 times in
10, so there is something to learn), then runs the real train stage for one epoch of a small network (random embeddings,
LSTM 16) in a fresh process, once per shard setting. Memory is the kernel's peak resident set
of that process (ru_maxrss from wait4), not an estimate.

    .venv/bin/python tests/benchmarks/bench_train_stream.py [--rows 1000000,4000000] [--shard-mb 64]
        [--dir /tmp/ksent-train-stream]

Run it on a quiet machine.
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

MAXLEN, VOCAB = 55, 40_000
NETWORK = {"embeddings": "random", "embedding_dim": 16, "units": 16, "batch_size": 1024, "epochs": 1,
           "patience": 1, "lr_decay": 1.0}
WHOLE_MB = 1e6           # a shard budget larger than any split here: read whole, as in memory


def write_split(path: Path, rows: int, seed: int) -> None:
    import numpy as np

    from pipeline.core.tables import ParquetRowGroupWriter
    from pipeline.model import padded

    rng = np.random.default_rng(seed)
    with ParquetRowGroupWriter(path, padded.schema(MAXLEN)) as writer:
        for start in range(0, rows, 100_000):
            n = min(100_000, rows - start)
            lengths = np.minimum(rng.geometric(1 / 18, n), MAXLEN)
            ids = np.minimum(rng.zipf(1.3, (n, MAXLEN)) + 1, VOCAB - 1).astype(np.int32)
            label = rng.integers(0, 2, n).astype(np.int8)
            marker = np.where(rng.random(n) < 0.9, label, 1 - label)      # 10% of the markers lie
            ids[np.arange(n), MAXLEN - 1] = 2 + marker                    # a sentiment id at the end of each row
            ids[np.arange(MAXLEN)[None, :] < (MAXLEN - lengths)[:, None]] = 0   # pre-padding
            names = [f"r{start + i}" for i in range(n)]
            writer.write(padded.to_table(ids, label, names, [""] * n, MAXLEN))


def make_data(folder: Path, rows: int) -> Path:
    """data/processed/synth/word/ with train.parquet (rows), val.parquet (rows / 10) and tokenizer.json."""
    from pipeline.core.stage import adopt_outputs
    from pipeline.text.normalize import Normalizer
    from pipeline.text.preprocess import Preprocessor
    from pipeline.text.segment import Segmenter
    from pipeline.text.vocab import Vocabulary

    out = folder / "data" / "processed" / "synth" / "word"
    if (out / "pad.manifest.json").exists():
        return folder / "data"
    out.mkdir(parents=True, exist_ok=True)
    write_split(out / "train.parquet", rows, 0)
    write_split(out / "val.parquet", rows // 10, 1)
    vocabulary = Vocabulary().fit_counts({f"t{i}": VOCAB - i for i in range(VOCAB - 2)})
    pre = Preprocessor(normalizer=Normalizer(), segmenter=Segmenter("word"), vocabulary=vocabulary, maxlen=MAXLEN)
    (out / "tokenizer.json").write_text(pre.to_json(), encoding="utf-8")
    adopt_outputs("pad", "synth/word", out, ["train.parquet", "val.parquet", "tokenizer.json"])
    return folder / "data"


def train_once(data: Path, artifacts: Path, shard_mb: float) -> dict:
    """The train stage in a fresh process: its seconds, peak RSS and what its manifest counted."""
    code = ("import sys, json; from pipeline.stages.train import train; "
            "r = train('synth', 'word', data_dir=sys.argv[1], artifacts_dir=sys.argv[2], force=True, "
            "echo=lambda line: print(line, file=sys.stderr), **json.loads(sys.argv[3])); print(json.dumps(r.counts))")
    params = json.dumps({**NETWORK, "shard_mb": shard_mb})
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-c", code, str(data), str(artifacts), params],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    if os.waitstatus_to_exitcode(status):
        sys.exit(f"train failed:\n{stderr[-3000:]}")
    counts = json.loads(stdout.strip().splitlines()[-1])
    return {"seconds": seconds, "peak_mib": usage.ru_maxrss / 1024, "shards": counts["train_shards"],
            "rows": counts["train_rows"], "val_accuracy": counts["best_val_accuracy"]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="1000000,4000000", help="training split sizes [default: 1000000,4000000]")
    ap.add_argument("--shard-mb", type=float, default=64.0, help="the streamed setting [default: 64]")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/ksent-train-stream"))
    args = ap.parse_args()
    sizes = [int(v) for v in args.rows.split(",")]
    results = {}
    print(f"{'train rows':>11s} {'x MiB':>7s} {'shard_mb':>9s} {'shards':>6s} {'seconds':>8s} {'rows/s':>8s} "
          f"{'peak MiB':>9s} {'val acc':>8s}")
    for rows in sizes:
        data = make_data(args.dir / str(rows), rows)
        for shard_mb in (args.shard_mb, WHOLE_MB):
            artifacts = args.dir / str(rows) / f"artifacts-{shard_mb:g}"
            r = train_once(data, artifacts, shard_mb)
            shutil.rmtree(artifacts, ignore_errors=True)
            results[(rows, shard_mb)] = r
            setting = "whole" if shard_mb == WHOLE_MB else f"{shard_mb:g}"
            print(f"{rows:11,d} {rows * MAXLEN * 4 / 2**20:7,.0f} {setting:>9s} "
                  f"{r['shards']:6d} {r['seconds']:8.1f} {rows / r['seconds']:8,.0f} {r['peak_mib']:9,.0f} "
                  f"{r['val_accuracy']:8.4f}", flush=True)
    if len(sizes) > 1:
        lo, hi = sizes[0], sizes[-1]
        print(f"\npeak memory of train, {lo:,} -> {hi:,} training rows ({hi / lo:.0f}x the data):")
        for shard_mb, name in ((args.shard_mb, f"in shards of {args.shard_mb:g} MB"), (WHOLE_MB, "whole")):
            a, b = results[(lo, shard_mb)]["peak_mib"], results[(hi, shard_mb)]["peak_mib"]
            print(f"  {name:>20s}: {a:,.0f} -> {b:,.0f} MiB ({b / a:.2f}x)")


if __name__ == "__main__":
    main()
