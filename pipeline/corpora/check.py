"""`ksent corpus show|check`: what a declaration resolves to, and a file read against it (nothing written)."""
from __future__ import annotations

from collections import Counter
from dataclasses import asdict
from pathlib import Path

from pipeline.corpora.readers import file_parts, read_part
from pipeline.corpora.spec import Corpus, LabelRule, check_utf8_share


def describe(corpus: Corpus) -> dict:
    """The declaration as ksent reads it: files and their sources, format, columns, label rule, split."""
    rule = corpus.label
    if isinstance(rule, LabelRule):
        label = {"column": rule.column, "positive": list(rule.positive), "negative": list(rule.negative)}
    else:
        label = {"rating column": rule.column, "range": [rule.low, rule.high],
                 "positive": f">= {rule.positive_from:g}", "negative": f"<= {rule.negative_to:g}",
                 "neutral": "between (dropped, counted)" if rule.positive_from - rule.negative_to > 1 else "none"}
    files = [{**{k: v for k, v in asdict(f).items() if v not in (None, "")},
              "checksum": f"{f.checksum_kind()} {f.expected_checksum()}" if f.pinned else "recorded at first download"}
             for f in corpus.files]
    for f in files:
        f.pop("sha256", None), f.pop("git_blob_sha1", None)
        f["role"] = f.pop("source")
    out = {"name": corpus.name, "declared in": corpus.origin, "description": corpus.description, "files": files,
           "format": {k: v for k, v in asdict(corpus.format).items() if v not in ((), None)},
           "text column": corpus.text, "id column": corpus.id or "(the line number a row starts on)",
           "label": label}
    split = dict(corpus.split.defaults)
    if corpus.split.column:
        split = {"column": corpus.split.column, "values": dict(corpus.split.values), **split}
    out["split"] = split or "by the files' roles; ratios: the split stage's defaults"
    if corpus.unlabeled:
        out["unlabeled"] = {"name": corpus.unlabeled.name, "url": corpus.unlabeled.url or "(mirror only)",
                            "format": corpus.unlabeled_format.kind, "text column": corpus.unlabeled_text}
    return out


def check_file(corpus: Corpus, path: Path | str, source: str) -> dict:
    """Read one labelled file as the clean stage would: rows, usable rows by label, problems by reason.
    PipelineError for what stops the clean stage (a missing column, another encoding, an empty file)."""
    path = Path(path)
    rows = Counter()
    problems: Counter = Counter()
    read = 0
    for part in file_parts(path, corpus, corpus.format):
        frame, bad, n = read_part(path, part, corpus, source)
        read += n
        problems.update(bad)
        rows.update(frame["label"].map({1: "positive", 0: "negative"}).tolist())
        rows.update(f"source {s}" for s in frame["source"].tolist())
    check_utf8_share(path, problems["invalid UTF-8"], read)
    return {"file": str(path), "rows": read, "usable": rows["positive"] + rows["negative"],
            "positive": rows["positive"], "negative": rows["negative"],
            "by source": {k.removeprefix("source "): v for k, v in rows.items() if k.startswith("source ")},
            "problems": dict(sorted(problems.items()))}
