"""clean: read the raw corpus files, count malformed rows, normalize the text (regex profile).

Output `data/interim/<corpus>/clean.parquet`: id, raw (text as published), text
(normalized), label, rating, source; and `normalizer.json`, the normalization
that `predict` will replay. Rows empty after cleaning are dropped from training
sources and counted; rows of an upstream test file are kept by default (each
still gets a prediction), because published accuracies score every test row.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipeline import params as defaults
from pipeline.corpora import get_corpus, pinned_check
from pipeline.io import (
    Input,
    ParameterError,
    PipelineError,
    Stage,
    StageResult,
    Staging,
    check_number,
    run_stage,
    write_json,
    write_parquet,
)
from pipeline.text.normalize import PROFILES, Normalizer


def interim_dir(data_dir: Path | str, corpus: str) -> Path:
    return Path(data_dir) / "interim" / corpus


def plan(corpus: str, *, data_dir: Path | str = "data", profile: str = defaults.CLEAN["profile"],
         squeeze: int = defaults.CLEAN["squeeze"], drop_empty_test: bool = defaults.CLEAN["drop_empty_test"]) -> Stage:
    spec = get_corpus(corpus)
    if profile not in PROFILES:
        raise ParameterError(f"profile must be one of {', '.join(PROFILES)}, got {profile!r}")
    check_number("squeeze", squeeze, 0, integer=True)
    raw_dir = Path(data_dir) / "raw" / corpus
    return Stage("clean", corpus, interim_dir(data_dir, corpus),
                 inputs={f.name: Input(raw_dir / f.name, None, pinned_check(corpus, f)) for f in spec.files},
                 params={"profile": profile, "squeeze": squeeze, "drop_empty_test": bool(drop_empty_test)},
                 outputs=("clean.parquet", "normalizer.json"))


def clean(corpus: str, *, data_dir: Path | str = "data", profile: str = defaults.CLEAN["profile"],
          squeeze: int = defaults.CLEAN["squeeze"], drop_empty_test: bool = defaults.CLEAN["drop_empty_test"],
          force: bool = False, echo: Callable[[str], None] | None = None) -> StageResult:
    stage = plan(corpus, data_dir=data_dir, profile=profile, squeeze=squeeze, drop_empty_test=drop_empty_test)
    spec = get_corpus(corpus)
    normalizer = Normalizer(profile=profile, squeeze=squeeze)
    raw_dir = Path(data_dir) / "raw" / corpus

    def run(out: Staging) -> StageResult:
        table, problems = spec.read(raw_dir)
        if not (table["source"] != "test").any():
            raise PipelineError(f"clean {corpus}: no valid training rows in {raw_dir} "
                                f"({', '.join(f'{n:,} {r}' for r, n in problems.items()) or 'no data lines'})")
        read_by_source = table["source"].value_counts().to_dict()
        table = table.rename(columns={"text": "raw"})
        table["text"] = [normalizer(t) for t in table["raw"]]
        empty = table["text"] == ""
        droppable = empty & ((table["source"] != "test") | drop_empty_test)
        kept_empty = int((empty & ~droppable).sum())
        table = table.loc[~droppable, ["id", "raw", "text", "label", "rating", "source"]].reset_index(drop=True)
        write_parquet(table, out.path("clean.parquet"))
        write_json(out.path("normalizer.json"), normalizer.to_dict())

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

    return run_stage(stage, run, force=force, echo=echo)
