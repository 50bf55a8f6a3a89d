"""Learning curve: a corpus's model trained on few of its labels, from scratch against adapted from a general model.

    .venv/bin/python tests/benchmarks/bench_few_labels.py --parent artifacts/nsmc-morpheme-mecab \
        --plot docs/few_labels.png

For each size (250 / 500 / 1,000 / 2,000 / 4,000 / all labelled train rows of the shopping sample by default) a
stratified, seeded subset of the train split keeps its labels; the other train rows are left out (split
"unused": the pad stage learns nothing from them), the validation and test splits stay whole. Then, in a folder
of its own per size and arm, the pad, train and evaluate stages run as `ksent run` runs them:
- scratch: `--init-from none`, the network starts from the corpus's pretrained vectors;
- adapted: `--init-from PARENT`, it starts from the parent bundle's network and vocabulary.
The pretrained vectors (vectors.npz) are, with `--vectors corpus` (the default), the corpus's own from its
make all (learned from every train text and its 25,000 unlabeled reviews, without their labels), as a user with
few labels but many texts has them; with `--vectors labelled`, learned by the pretrain stage from the labelled
subset's texts alone, as a user with nothing but the labelled reviews has them. The parent must not have seen the
corpus (not the shopping sample's own models). With --self-train, each arm's model then teaches a student over the
corpus's unlabeled reviews (`ksent distill --teacher TOK`: the student starts from the vectors and learns from the
labelled rows and the teacher's probabilities). Prints test accuracy, validation accuracy (the epoch kept) and
training seconds per size and arm, and with --plot writes the curve as a PNG. With --make-all, also what a
one-corpus `make all` makes from each subset with the parent's bundles beside it (every tokenization adapted from
the parent's of its tokenization, their ensemble, its student), and which of them is the default model.

The corpus's clean, dedupe, split, tokenize and pretrain stages must have run (`make all` or `ksent run`).
Not a pytest test (the name does not start with test_): it trains 12 networks.
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
SIZES = "250,500,1000,2000,4000,all"


def subset(split_rows, size: int | None, seed: int):
    """split.parquet's rows with all but `size` train rows (stratified by label, seeded) marked "unused"."""
    import numpy as np
    from sklearn.model_selection import train_test_split

    train = np.flatnonzero((split_rows["split"] == "train").to_numpy())
    if size is None or size >= len(train):
        return split_rows
    kept, _ = train_test_split(train, train_size=size, stratify=split_rows["label"].to_numpy()[train],
                               random_state=seed)
    rows = split_rows.copy()
    dropped = np.setdiff1d(train, kept)
    rows.loc[rows.index[dropped], "split"] = "unused"
    return rows


def prepare(source: Path, folder: Path, corpus: str, tok: str, split_rows, vectors: str) -> Path:
    """A data folder for one run: the corpus's interim files with `split_rows` as its split, and its tokens and
    (`vectors` "corpus") vectors, vouched for as the stages' outputs, or ("labelled") vectors learned by the pretrain
    stage from the labelled train rows alone. Returns the data folder."""
    from pipeline import layout
    from pipeline.core.stage import adopt_outputs

    data = folder / "data"
    interim, processed = layout.interim_dir(data, corpus), layout.processed_dir(data, corpus, tok)
    interim.mkdir(parents=True)
    shutil.copy2(layout.interim_dir(source, corpus) / "normalizer.json", interim)
    split_rows.to_parquet(interim / layout.SPLIT_FILE, index=False)
    adopt_outputs("clean", corpus, interim, ["normalizer.json"])
    adopt_outputs("split", corpus, interim, [layout.SPLIT_FILE])
    processed.mkdir(parents=True)
    for name in (layout.TOKENS_FILE, "segmenter.json"):
        shutil.copy2(layout.processed_dir(source, corpus, tok) / name, processed)
    adopt_outputs("tokenize", layout.label(corpus, tok), processed, [layout.TOKENS_FILE, "segmenter.json"])
    raw = layout.raw_dir(source, corpus)
    shutil.copytree(raw, layout.raw_dir(data, corpus))       # the unlabeled reviews, for --self-train
    if vectors == "corpus":
        shutil.copy2(layout.processed_dir(source, corpus, tok) / layout.VECTORS_FILE, processed)
        adopt_outputs("pretrain", layout.label(corpus, tok), processed, [layout.VECTORS_FILE])
    else:
        from pipeline.stages.pretrain import pretrain

        pretrain(corpus, tok, data_dir=data, unlabeled="none", echo=lambda line: None)
    return data


def run_arm(data: Path, artifacts: Path, corpus: str, tok: str, parent: Path | None, train_params: dict) -> dict:
    """pad, train and evaluate as `ksent run` does: test and validation accuracy, training seconds."""
    from pipeline import layout
    from pipeline.core.files import read_json
    from pipeline.stages.evaluate import evaluate
    from pipeline.stages.pad import pad
    from pipeline.stages.train import train

    quiet = {"echo": lambda line: None}
    pad(corpus, tok, data_dir=data, parent=parent, **quiet)
    started = time.perf_counter()
    trained = train(corpus, tok, data_dir=data, artifacts_dir=artifacts,
                    init_from=str(parent) if parent else "none", **train_params, **quiet)
    seconds = time.perf_counter() - started
    evaluate(corpus, tok, data_dir=data, artifacts_dir=artifacts, **quiet)
    metrics = read_json(layout.bundle_dir(artifacts, corpus, tok) / layout.METRICS_FILE)
    return {"test": metrics["accuracy"], "val": trained.counts["best_val_accuracy"],
            "epoch": trained.counts["best_epoch"], "train_rows": trained.counts["train_rows"], "seconds": seconds}


def self_train(data: Path, artifacts: Path, corpus: str, tok: str, distill_params: dict) -> dict:
    """distill with the arm's bundle as the teacher of a student that starts from the vectors, as distill's do: test
    and validation accuracy, seconds (labelling included)."""
    from pipeline.stages.distill import distill

    started = time.perf_counter()
    done = distill(corpus, data_dir=data, artifacts_dir=artifacts, teacher=tok, **distill_params,
                   echo=lambda line: None)
    return {"test": done.counts["accuracy"], "val": done.counts["best_val_accuracy"],
            "seconds": time.perf_counter() - started}


def make_all(source: Path, folder: Path, corpus: str, toks: list[str], parents: dict, split_rows, vectors: str,
             train_params: dict) -> dict:
    """What a one-corpus `make all` makes from these labels with the parents beside it: every tokenization adapted
    (`--init-from` the parent of its tokenization), their ensemble and distill's student of it. Returns each
    one's test and validation accuracy, and the default model's name (the best on validation: `scored`)."""
    from pipeline import layout
    from pipeline.stages.distill import distill
    from pipeline.stages.ensemble import ensemble

    data, artifacts = folder / "data", folder / "artifacts"
    for tok in toks:
        own = prepare(source, folder / "stages" / tok, corpus, tok, split_rows, vectors)
        if not data.exists():
            shutil.copytree(own, data)
        else:
            shutil.copytree(layout.processed_dir(own, corpus, tok), layout.processed_dir(data, corpus, tok))
        run_arm(data, artifacts, corpus, tok, parents[tok], train_params)
    shutil.rmtree(folder / "stages")
    quiet = {"echo": lambda line: None}
    ensemble(corpus, data_dir=data, artifacts_dir=artifacts, **quiet)
    distill(corpus, data_dir=data, artifacts_dir=artifacts, **quiet)
    return scored(artifacts, corpus)


def scored(artifacts: Path, corpus: str) -> dict:
    """Each bundle's test accuracy and the validation accuracy the default model is chosen on (at its decision
    threshold), and the default model's name."""
    from pipeline import layout
    from pipeline.core.files import read_json
    from pipeline.predict.predictor import val_accuracy_of
    from pipeline.predict.selection import default_model_dir

    figures = {}
    for bundle in sorted(artifacts.glob(f"{corpus}-*/{layout.METRICS_FILE}")):
        figures[bundle.parent.name.removeprefix(f"{corpus}-")] = {
            "test": read_json(bundle)["accuracy"],
            "val": val_accuracy_of(read_json(bundle.parent / layout.BUNDLE_FILE))}
    return {**figures, "default": default_model_dir(artifacts).name.removeprefix(f"{corpus}-")}


def plot(path: Path, results: dict, corpus: str, parent: str) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    names = {"scratch": "from scratch", "adapted": f"adapted from {parent}",
             "scratch, self-trained": "from scratch, then self-trained",
             "adapted, self-trained": "adapted, then self-trained"}
    for arm, style in (("scratch", "o--"), ("adapted", "s-"), ("scratch, self-trained", "v:"),
                       ("adapted, self-trained", "^-")):
        rows = sorted((r["scratch"]["train_rows"], r[arm]["test"]) for r in results.values() if arm in r)
        if rows:
            ax.plot([n for n, _ in rows], [a for _, a in rows], style, label=names[arm])
    ax.set_xscale("log")
    ax.set(xlabel=f"labelled {corpus} train reviews", ylabel="test accuracy", title=f"{corpus}: few labels")
    ax.grid(True, alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=100, metadata={"Software": None})
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--parent", type=Path, required=True, help="The general bundle to adapt (one network).")
    parser.add_argument("--corpus", default="naver_shopping_sample")
    parser.add_argument("--tokenizer", default="morpheme-mecab", help="The tokenization's name (the parent's).")
    parser.add_argument("--data-dir", type=Path, default=REPO / "data", help="Where the corpus's stages ran.")
    parser.add_argument("--sizes", default=SIZES, help=f"Labelled train rows per run [default: {SIZES}].")
    parser.add_argument("--seed", type=int, default=42, help="The subsets' seed.")
    parser.add_argument("--vectors", choices=("corpus", "labelled"), default="corpus",
                        help="The pretrained vectors: the corpus's own, or learned from the labelled rows alone.")
    parser.add_argument("--param", action="append", default=[], metavar="NAME=VALUE",
                        help="A training parameter for both arms, e.g. epochs=12 (repeatable; JSON values).")
    parser.add_argument("--self-train", action="store_true",
                        help="Also distill each arm's model over the corpus's unlabeled reviews (it teaches a "
                             "student, as `ksent distill --teacher TOK` does).")
    parser.add_argument("--distill-param", action="append", default=[], metavar="NAME=VALUE",
                        help="A distill parameter for --self-train, e.g. epochs=5 (repeatable; JSON values).")
    parser.add_argument("--make-all", action="store_true",
                        help="Also make what a one-corpus `make all` makes from each subset, the parent's bundles of "
                             "every tokenization beside it: each tokenization adapted, their ensemble, and its "
                             "student over the unlabeled reviews.")
    parser.add_argument("--plot", type=Path, help="Write the learning curve here (PNG).")
    parser.add_argument("--work", type=Path, help="Keep the runs' folders here [default: a temporary folder].")
    args = parser.parse_args()

    import json

    from pipeline import layout
    from pipeline.core.files import read_json
    from pipeline.core.quiet import import_keras
    from pipeline.core.tables import read_table

    import_keras()
    parent = args.parent.resolve()
    if args.corpus in str(read_json(parent / layout.BUNDLE_FILE)["corpus"]).split("+"):
        sys.exit(f"{parent.name} learned from {args.corpus}'s reviews: it cannot be the parent here")
    train_params = {k: json.loads(v) for k, v in (p.split("=", 1) for p in args.param)}
    distill_params = {k: json.loads(v) for k, v in (p.split("=", 1) for p in args.distill_param)}
    split_rows = read_table(layout.split_path(args.data_dir, args.corpus), "split", args.corpus)
    work = args.work or Path(tempfile.mkdtemp(prefix="few_labels-"))
    results: dict[str, dict] = {}
    print(f"{args.corpus}, {args.tokenizer}; parent {parent.name}; subsets seeded {args.seed}; vectors "
          f"{'the corpus' + chr(39) + 's' if args.vectors == 'corpus' else 'from the labelled rows'}; "
          f"params {train_params or 'the defaults'}", flush=True)
    print(f"{'labels':>8}  {'scratch test':>12}  {'adapted test':>12}  {'scratch val':>11}  {'adapted val':>11}"
          f"  {'scratch s':>9}  {'adapted s':>9}"
          + ("  self-trained: scratch / adapted (test, val, s)" if args.self_train else ""), flush=True)
    for size in args.sizes.split(","):
        rows = subset(split_rows, None if size == "all" else int(size), args.seed)
        results[size] = {}
        for arm in ("scratch", "adapted"):
            folder = work / size / arm
            shutil.rmtree(folder, ignore_errors=True)
            data = prepare(args.data_dir, folder, args.corpus, args.tokenizer, rows, args.vectors)
            results[size][arm] = run_arm(data, folder / "artifacts", args.corpus, args.tokenizer,
                                         parent if arm == "adapted" else None, train_params)
        for arm in ("scratch", "adapted") if args.self_train else ():
            folder = work / size / arm
            results[size][f"{arm}, self-trained"] = self_train(folder / "data", folder / "artifacts", args.corpus,
                                                               args.tokenizer, distill_params)
        s, a = results[size]["scratch"], results[size]["adapted"]
        print(f"{s['train_rows']:>8,}  {s['test']:>12.4f}  {a['test']:>12.4f}  {s['val']:>11.4f}  {a['val']:>11.4f}"
              f"  {s['seconds']:>9.0f}  {a['seconds']:>9.0f}"
              + "".join(f"  {t['test']:.4f} {t['val']:.4f} {t['seconds']:3.0f}"
                        for arm, t in results[size].items() if arm.endswith("self-trained")), flush=True)
    if args.make_all:
        print("\nWhat a one-corpus make all makes (test accuracy, validation in brackets; * the default model):")
        toks = ["word", "char", args.tokenizer]
        parents = {tok: parent.parent / parent.name.replace(args.tokenizer, tok) for tok in toks}
        for size in args.sizes.split(","):
            folder = work / size / "make-all"
            shutil.rmtree(folder, ignore_errors=True)
            made = make_all(args.data_dir, folder, args.corpus, toks, parents,
                            subset(split_rows, None if size == "all" else int(size), args.seed), args.vectors,
                            train_params)
            print(f"{size:>8}  " + "  ".join(f"{name}{'*' if name == made['default'] else ''} {m['test']:.4f} "
                                              f"({m['val']:.4f})" for name, m in made.items() if name != "default"),
                  flush=True)
    if args.plot:
        plot(args.plot, results, args.corpus, parent.name)
        print(f"plot: {args.plot}")
    print(f"runs kept in {work}" if args.work else "", end="")
    if not args.work:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
