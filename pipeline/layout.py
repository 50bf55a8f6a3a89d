"""Where every input and output lives, for a corpus, a tokenization and a bundle (after
cookiecutter-data-science), and the command that re-makes a stage's outputs:

    data/raw/<corpus>/                upstream files, verified (download)
    data/interim/<corpus>/            cleaned, deduplicated, split tables (clean, dedupe, split)
    data/processed/<corpus>/<tok>/    tokens, vectors, vocabulary, padded split tables
    artifacts/<corpus>-<tok>/         a bundle: the model and all it needs to predict
    artifacts/REPORT.md               every bundle's figures side by side

`<tok>` is a tokenization's name (`Segmenter.name()`: word, char, char-jamo, morpheme-mecab, ...).
Every stage, the status report and the messages that name a command build paths here.
"""
from __future__ import annotations

from pathlib import Path

DATA_DIR = "data"
ARTIFACTS_DIR = "artifacts"
REPORT_FILE = "REPORT.md"
DOMAINS_FILE = "domains.json"             # artifacts/domains.json: every bundle on every corpus (domains)
BUNDLE_FILE = "bundle.json"               # artifacts/<bundle>/bundle.json: what a bundle is (pipeline.predict.bundle)
SPLIT_FILE = "split.parquet"              # data/interim/<corpus>/split.parquet: every row with its split (split)
TOKENS_FILE = "tokens.parquet"            # data/processed/<corpus>/<tok>/: each review's tokens (tokenize)
VECTORS_FILE = "vectors.npz"              # ... the token vectors (pretrain)
TOKENIZER_FILE = "tokenizer.json"         # ... and in a bundle: the replayable preprocessing (pad)
METRICS_FILE = "metrics.json"             # artifacts/<bundle>/metrics.json: its test figures (evaluate)
SPLITS = ("train", "val", "test")          # split.parquet's `split` values; pad writes <split>.parquet


def raw_dir(data_dir: Path | str, corpus: str) -> Path:
    return Path(data_dir) / "raw" / corpus


def interim_dir(data_dir: Path | str, corpus: str) -> Path:
    return Path(data_dir) / "interim" / corpus


def split_path(data_dir: Path | str, corpus: str) -> Path:
    return interim_dir(data_dir, corpus) / SPLIT_FILE


def bundle_manifests(artifacts_dir: Path | str) -> list[Path]:
    """Every artifacts/<bundle>/bundle.json, by folder name."""
    return sorted(Path(artifacts_dir).glob(f"*/{BUNDLE_FILE}"))


def processed_dir(data_dir: Path | str, corpus: str, tok: str) -> Path:
    return Path(data_dir) / "processed" / corpus / tok


def bundle_dir(artifacts_dir: Path | str, corpus: str, tok: str) -> Path:
    return Path(artifacts_dir) / bundle_name(corpus, tok)


def bundle_name(corpus: str, tok: str) -> str:
    return f"{corpus}-{tok}"


def teacher_labels_cache(artifacts_dir: Path | str, folder: str) -> Path:
    """artifacts/cache/<folder>.teacher_labels.npz: the teacher's labels the distillation into artifacts/<folder> made
    last, beside the teachers (pipeline.stages.teacher_labels)."""
    return Path(artifacts_dir) / "cache" / f"{folder}.teacher_labels.npz"


def report_path(artifacts_dir: Path | str) -> Path:
    return Path(artifacts_dir) / REPORT_FILE


def is_plain_name(name) -> bool:
    """Whether `name` (read from a manifest) names an entry of its folder: no path, not "." or ".."."""
    return isinstance(name, str) and name not in ("", ".", "..") and "/" not in name and "\\" not in name \
        and "\0" not in name


def label(corpus: str, tok: str | None = None) -> str:
    """How stages name what they work on in messages and manifests: "corpus" or "corpus/tok"."""
    return f"{corpus}/{tok}" if tok else corpus


def tokenizer_kind(tok: str) -> str:
    """The kind of a tokenization's name (Segmenter.name()): "morpheme-mecab" -> "morpheme", "char-jamo" -> "char"."""
    return tok.partition("-")[0]


def tokenizer_args(tok: str) -> str:
    """The `ksent` options that select tokenization `tok` (the inverse of Segmenter.name())."""
    kind, _, rest = tok.partition("-")                  # tokenizer_kind, and what follows it
    args = f"--tokenizer {kind}"
    if kind == "morpheme" and rest:
        args += f" --backend {rest}"
    elif rest == "jamo":
        args += " --jamo"
    return args


def rerun_command(stage: str, label: str) -> str:
    """`ksent <stage> ...` for a label "corpus" or "corpus/tok" ("" for a stage of the whole artifacts folder)."""
    corpus, _, tok = label.partition("/")
    return f"ksent {stage}" + (f" --corpus {corpus}" if corpus else "") + (f" {tokenizer_args(tok)}" if tok else "")
