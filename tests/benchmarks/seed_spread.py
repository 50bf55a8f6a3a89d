"""Seed spread: retrain a corpus's models with other training seeds and print mean +- std of their accuracy.

Run after `make all` (it reuses data/processed/, the pretrained vectors included; only the
training seed changes - network initialization, dropout and batch order):

    .venv/bin/python tests/benchmarks/seed_spread.py --corpus nsmc --seeds 42,7,1234

Each seed's bundles and their ensemble go to <out>/seed-<s>/ (artifacts/ is not touched);
a seed whose bundles are there already is not retrained (stages skip themselves).
Test figures are printed for reporting only: nothing here selects anything.
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from pipeline.core.files import read_json
from pipeline.stages.ensemble import ensemble
from pipeline.stages.evaluate import evaluate
from pipeline.stages.train import train


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", default="nsmc")
    parser.add_argument("--tokenizers", default="morpheme-mecab,char,word")
    parser.add_argument("--seeds", default="42,7,1234")
    parser.add_argument("--data-dir", default="data")
    parser.add_argument("--out", default=str(Path(tempfile.gettempdir()) / "ksent-seeds"))
    args = parser.parse_args()
    toks, seeds = args.tokenizers.split(","), [int(s) for s in args.seeds.split(",")]
    figures: dict[str, list[tuple[float, float]]] = {}
    for seed in seeds:
        artifacts = Path(args.out) / f"seed-{seed}"
        for tok in toks:
            train(args.corpus, tok, data_dir=args.data_dir, artifacts_dir=artifacts, seed=seed)
            evaluate(args.corpus, tok, data_dir=args.data_dir, artifacts_dir=artifacts)
        if len(toks) > 1:
            ensemble(args.corpus, data_dir=args.data_dir, artifacts_dir=artifacts)
        for name in [*toks, "ensemble"][:len(toks) + (len(toks) > 1)]:
            folder = artifacts / f"{args.corpus}-{name}"
            test = read_json(folder / "metrics.json")["accuracy"]
            val = read_json(folder / "bundle.json")["training"]["best_val_accuracy"]
            figures.setdefault(name, []).append((test, val))

    print(f"\n{args.corpus}: {len(seeds)} training seeds ({', '.join(map(str, seeds))}), same data and vectors")
    print(f"{'model':<16} {'test accuracy per seed':<28} {'test mean +- std':>18} {'val mean +- std':>18}")
    def spread(xs: list[float]) -> str:
        return f"{statistics.mean(xs):.4f} +- {statistics.stdev(xs) if len(xs) > 1 else 0:.4f}"

    for name, pairs in figures.items():
        tests, vals = [t for t, _ in pairs], [v for _, v in pairs]
        print(f"{name:<16} {', '.join(f'{t:.4f}' for t in tests):<28} {spread(tests):>18} {spread(vals):>18}")


if __name__ == "__main__":
    main()
