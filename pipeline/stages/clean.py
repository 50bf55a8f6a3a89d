"""clean: read the raw corpus files, count malformed rows, normalize the text (regex profile).

Output `data/interim/<corpus>/clean.parquet`: id, raw (text as published), text
(normalized), label, rating, source; and `normalizer.json`, the normalization
that `predict` will replay. Rows empty after cleaning are dropped from training
sources and counted; rows of an upstream test file are kept by default (each
still gets a prediction), because published accuracies score every test row.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable

from pipeline import params as defaults
from pipeline.corpora import get_corpus
from pipeline.io import StageResult, atomic_path, run_stage, write_json
from pipeline.text.normalize import Normalizer


def interim_dir(data_dir: Path | str, corpus: str) -> Path:
    return Path(data_dir) / "interim" / corpus


def clean(corpus: str, *, data_dir: Path | str = "data", profile: str = defaults.CLEAN["profile"],
          squeeze: int = defaults.CLEAN["squeeze"], drop_empty_test: bool = defaults.CLEAN["drop_empty_test"],
          force: bool = False, echo: Callable[[str], None] | None = None) -> StageResult:
    spec = get_corpus(corpus)
    normalizer = Normalizer(profile=profile, squeeze=squeeze)
    raw_dir = Path(data_dir) / "raw" / corpus
    out_dir = interim_dir(data_dir, corpus)
    table_path, normalizer_path = out_dir / "clean.parquet", out_dir / "normalizer.json"

    def run() -> StageResult:
        table, problems = spec.read(raw_dir)
        read_by_source = table["source"].value_counts().to_dict()
        table = table.rename(columns={"text": "raw"})
        table["text"] = [normalizer(t) for t in table["raw"]]
        empty = table["text"] == ""
        droppable = empty & ((table["source"] != "test") | drop_empty_test)
        kept_empty = int((empty & ~droppable).sum())
        table = table.loc[~droppable, ["id", "raw", "text", "label", "rating", "source"]].reset_index(drop=True)
        with atomic_path(table_path) as tmp:
            table.to_parquet(tmp, index=False)
        write_json(normalizer_path, normalizer.to_dict())

        read = sum(read_by_source.values()) + sum(problems.values())
        by_source = ", ".join(f"{src} {n:,}" for src, n in sorted(read_by_source.items(), reverse=True))
        details = [f"{n:,} {reason}" for reason, n in sorted(problems.items())]
        details.append(f"{int(droppable.sum()):,} empty after cleaning dropped")
        if kept_empty:
            details.append(f"{kept_empty:,} empty test rows kept")
        summary = f"clean {corpus}: {read:,} rows read ({by_source}) -> {len(table):,} rows ({'; '.join(details)})"
        return StageResult(summary=summary, counts={
            "rows_read": read, "rows_read_by_source": read_by_source, "malformed": dict(problems),
            "empty_dropped": int(droppable.sum()), "empty_test_kept": kept_empty, "rows_out": len(table)})

    return run_stage("clean", corpus, out_dir,
                     inputs={f.name: raw_dir / f.name for f in spec.files},
                     params={"profile": profile, "squeeze": squeeze, "drop_empty_test": drop_empty_test},
                     outputs={"clean.parquet": table_path, "normalizer.json": normalizer_path},
                     run=run, force=force, echo=echo)
