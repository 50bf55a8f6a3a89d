"""`ksent corpus show|check`: what a declaration resolves to, and a file read against it (nothing written)."""
from __future__ import annotations

import json
from collections import Counter
from dataclasses import asdict
from pathlib import Path

from pipeline.corpora.readers import file_parts
from pipeline.corpora.spec import Corpus, LabelRule, check_utf8_share
from pipeline.errors import PipelineError

CHUNK_ROWS = 20_000         # rows tallied at a time


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
    """Read one labelled file as the clean stage would: rows, usable rows by label and source, problems by
    reason, the label values no rule maps, and what cleaning would leave (`cleaning`). PipelineError for what
    stops the clean stage (a missing column, another encoding, an empty file)."""
    from pipeline.corpora.readers import _Rows, iter_rows

    path = Path(path)
    if not path.is_file():
        raise PipelineError(f"{path} is not a regular file (a pipe, device or folder): give the table's file")
    labels: Counter = Counter()
    by_source: dict[str, Counter] = {}
    problems: Counter = Counter()
    unmapped: Counter = Counter()
    read = 0
    cleaning = _Cleaning(corpus)

    def tally(rows: _Rows) -> None:
        nonlocal read
        frame = rows.frame()
        read += len(frame) + sum(rows.problems.values())
        problems.update(rows.problems)
        unmapped.update(rows.unmapped)
        labels.update(frame["label"].map({1: "positive", 0: "negative"}).tolist())
        for src, label in zip(frame["source"], frame["label"], strict=True):
            by_source.setdefault(str(src), Counter())[int(label)] += 1
        cleaning.add(frame)

    for part in file_parts(path, corpus, corpus.format):
        rows = _Rows(corpus, source)
        for number, row in iter_rows(path, part, corpus.format, rows.problems):
            rows.add(row, number)
            if len(rows.ids) >= CHUNK_ROWS:     # a gzip file is one partition: memory stays flat all the same
                tally(rows)
                rows = _Rows(corpus, source)
        tally(rows)
    check_utf8_share(path, problems["invalid UTF-8"], read)
    return {"file": str(path), "rows": read, "usable": labels["positive"] + labels["negative"],
            "positive": labels["positive"], "negative": labels["negative"],
            "by source": {s: sum(c.values()) for s, c in by_source.items()},
            "labels by source": {s: dict(c) for s, c in by_source.items()},
            "problems": dict(sorted(problems.items())), "unmapped label values": dict(unmapped.most_common(5)),
            "cleaning": cleaning.result()}


class _Cleaning:
    """What the clean stage would make of usable rows: how many are empty after cleaning under the declared
    profile (and their share of positives, a few examples), and how many of those each other profile keeps."""

    def __init__(self, corpus: Corpus):
        from pipeline import params as defaults
        from pipeline.text.normalize import PROFILES, Normalizer

        declared = {**defaults.CLEAN, **dict(corpus.clean)}
        self.profile, self.squeeze = declared["profile"], declared["squeeze"]
        self.normalizer = Normalizer(profile=self.profile, squeeze=self.squeeze)
        self.others = {name: Normalizer(profile=name, squeeze=self.squeeze) for name in PROFILES
                       if name != self.profile}
        self.empty = self.empty_positive = 0
        self.kept = Counter()
        self.examples: list[str] = []

    def add(self, frame) -> None:
        for text, label in zip(frame["text"].fillna(""), frame["label"], strict=True):
            if self.normalizer(text):
                continue
            self.empty += 1
            self.empty_positive += int(label)
            if len(self.examples) < 3 and text.strip() and text not in self.examples:
                self.examples.append(text)
            for name, other in self.others.items():
                self.kept[name] += bool(other(text))

    def result(self) -> dict:
        return {"profile": self.profile, "empty": self.empty, "empty_positive": self.empty_positive,
                "examples": self.examples, "kept by": {name: self.kept[name] for name in self.others}}


def split_check(corpus: Corpus, reports: list[dict]) -> str | None:
    """Why `ksent run` would fail on the checked files (`check_file`'s reports), naming what to change: no
    usable row, one label only, or split ratios that leave a split without rows of both labels."""
    from pipeline import params as defaults
    from pipeline.corpora.spec import LabelRule, split_problem

    usable = sum(r["usable"] for r in reports)
    unmapped = [value for r in reports for value in r["unmapped label values"]]
    rule = corpus.label
    if not usable and unmapped and isinstance(rule, LabelRule):
        example = ", ".join(json.dumps(_toml_value(v)) for v in unmapped[:2])
        return (f"no row is usable: column {rule.column!r} holds {', '.join(map(repr, unmapped[:5]))}, which [label] "
                f"positive = {list(rule.positive)!r} and negative = {list(rule.negative)!r} do not name - e.g. "
                f"positive = [{example.split(', ')[0]}], negative = [{example.split(', ')[-1]}]")
    if not usable:
        return "no row is usable - see the reasons above (columns, label rule, encoding)"
    for label, count in (("positive", "positive"), ("negative", "negative")):
        if not sum(r[count] for r in reports):
            where = (f"[label] {label} = {list(getattr(rule, label))!r} matches no value of column {rule.column!r}"
                     if isinstance(rule, LabelRule) else f"[rating] puts no row on the {label} side")
            return f"no {label} row: {where}"
    merged: dict[str, dict[int, int]] = {}
    for report in reports:
        for source, counts in report["labels by source"].items():
            for label, n in counts.items():
                merged.setdefault(source, {})[label] = merged.setdefault(source, {}).get(label, 0) + n
    ratios = {**defaults.SPLIT, **dict(corpus.split.defaults)}
    problem = split_problem(merged, ratios["val_ratio"], ratios["test_ratio"])
    return f"[split] {problem}" if problem else None


def _toml_value(text: str):
    """A label value as a declaration would write it: true/false, a number, or a string."""
    lowered = text.strip().lower()
    if lowered in ("true", "false"):
        return lowered == "true"
    try:
        return int(lowered)
    except ValueError:
        return text
