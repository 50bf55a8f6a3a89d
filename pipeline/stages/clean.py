"""clean: read the raw corpus files as declared, count malformed rows, normalize the text (regex profile).

Output `data/interim/<corpus>/clean.parquet`: id, raw (text as published), text
(normalized), label, rating, source; and `normalizer.json`, the normalization
that `predict` will replay. Rows empty after cleaning are dropped from training
sources and counted; rows of an upstream test file are kept by default (each
still gets a prediction), because published accuracies score every test row.

Each raw file is parsed (pipeline.corpora.readers) and normalized in partitions of whole rows
on the engine (pipeline.core.engine), the rows written in file order, so the output does not
depend on the number of workers.
"""
from __future__ import annotations

import shutil
from collections import Counter
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from pipeline import layout, params as defaults
from pipeline.core.engine import DEFAULT_WORKERS, Engine
from pipeline.core.files import write_json
from pipeline.core.stage import DECLARATION, Input, Stage, StageResult, Staging, Target, run_stage
from pipeline.core.tables import ParquetRowGroupWriter
from pipeline.corpora import Corpus, check_utf8_share, get_corpus, pinned_check
from pipeline.corpora.readers import BLOCK_BYTES, Part, file_parts, is_gzip, read_part, unpack
from pipeline.errors import PipelineError, check_number
from pipeline.text.normalize import Normalizer


def plan(corpus: str, *, data_dir: Path | str = layout.DATA_DIR, **params) -> Stage:
    """`params`: pipeline.params.CLEAN (profile, squeeze, drop_empty_test); unset ones (None) take the corpus
    declaration's [clean] values, else the defaults."""
    spec = get_corpus(corpus)
    params = {**defaults.CLEAN.resolve(params, {**defaults.CLEAN, **dict(spec.clean)}),
              DECLARATION: spec.declared("clean")}
    raw_dir = layout.raw_dir(data_dir, corpus)
    return Stage("clean", corpus, layout.interim_dir(data_dir, corpus),
                 inputs={f.name: Input(raw_dir / f.name, "download", pinned_check(corpus, f), corpus)
                         for f in spec.files},
                 params=params,
                 outputs=("clean.parquet", "normalizer.json"))


# Fewer blocks than this are cleaned in this process: parsing and regexes are cheap next to
# starting a local cluster (NSMC's 19 MB: 2.2 s in one process, ~4 s on 2 workers).
LOCAL_BELOW = 8
_COLUMNS = {"id": "string", "raw": "string", "text": "str", "label": "int8", "rating": "Int8", "source": "string"}


def plan_for(t: Target) -> Stage:
    return plan(t.corpus, data_dir=t.data_dir)


def run_for(t: Target, **kwargs) -> StageResult:
    return clean(t.corpus, data_dir=t.data_dir, workers=t.workers, scheduler=t.scheduler, **kwargs)


def _schema():
    import pandas as pd
    import pyarrow as pa

    empty = pd.DataFrame({name: pd.Series([], dtype=dtype) for name, dtype in _COLUMNS.items()})
    return pa.Table.from_pandas(empty, preserve_index=False).schema


def clean_block(path: str, part: Part, spec: Corpus, source: str, normalizer: Normalizer, drop_empty_test: bool):
    """The rows of one partition of a raw file, parsed and normalized (runs on a worker), and its counts."""
    import pandas as pd
    import pyarrow as pa

    frame, problems, n_lines = read_part(path, part, spec, source)
    frame = frame.rename(columns={"text": "raw"})
    frame["text"] = pd.Series([normalizer(t) for t in frame["raw"]], dtype=_COLUMNS["text"])
    empty = frame["text"] == ""
    droppable = empty & ((frame["source"] != "test") | drop_empty_test)
    kept = frame.loc[~droppable, list(_COLUMNS)].reset_index(drop=True)
    table = pa.Table.from_pandas(kept, preserve_index=False).cast(_schema())
    read = {str(src): int(n) for src, n in frame["source"].value_counts(sort=False).items()}
    return table, {"read": read, "problems": problems, "lines": n_lines, "dropped": int(droppable.sum()),
                   "kept_empty": int((empty & ~droppable).sum())}


def _plain(path: Path, spec: Corpus, folder: Path) -> Path:
    """`path` itself, or for a gzip file its contents unpacked (streamed, bounded) into `folder`."""
    if not is_gzip(path, spec.format):
        return path
    folder.mkdir(exist_ok=True)
    unpack(path, folder / path.name)
    return folder / path.name


def clean(corpus: str, *, data_dir: Path | str = layout.DATA_DIR, workers: int | None = None,
          scheduler: str | None = None, force: bool = False, echo: Callable[[str], None] | None = None,
          **params) -> StageResult:
    """Clean the corpus's raw files into clean.parquet; `params`: pipeline.params.CLEAN."""
    if workers is not None:
        check_number("workers", workers, 1, integer=True)
    stage = plan(corpus, data_dir=data_dir, **params)
    spec = get_corpus(corpus)
    normalizer = Normalizer(profile=stage.params["profile"], squeeze=stage.params["squeeze"])
    drop_empty_test = stage.params["drop_empty_test"]
    raw_dir = layout.raw_dir(data_dir, corpus)

    def run(out: Staging) -> StageResult:
        unpacked = out.dir / ".unpacked"           # gzip files, decompressed to be cut into partitions
        try:
            plain = {f.name: _plain(raw_dir / f.name, spec, unpacked) for f in spec.files}
            return run_on(out, plain, replace(spec, format=replace(spec.format, compression="none")))
        except PipelineError as exc:                # name the file the user has, not its unpacked copy
            raise PipelineError(str(exc).replace(str(unpacked.resolve()), str(raw_dir.resolve()))) from None
        finally:
            shutil.rmtree(unpacked, ignore_errors=True)

    def run_on(out: Staging, plain: dict[str, Path], spec: Corpus) -> StageResult:
        parts = [(str(plain[f.name].resolve()), part, spec, f.source, normalizer, bool(drop_empty_test))
                 for f in spec.files for part in file_parts(plain[f.name], spec, spec.format, BLOCK_BYTES)]
        read_by_source: Counter = Counter()
        problems: Counter = Counter()
        invalid_by_file: Counter = Counter()
        lines_by_file: Counter = Counter()
        dropped = kept_empty = rows_out = 0
        with ParquetRowGroupWriter(out.path("clean.parquet"), _schema()) as writer, \
                Engine(DEFAULT_WORKERS if workers is None else workers, scheduler) as eng:
            for part, (table, counts) in zip(parts, eng.map(clean_block, parts, what=f"clean {corpus}",
                                                                 local_below=LOCAL_BELOW),
                                             strict=True):
                path = part[0]
                writer.write(table)
                rows_out += table.num_rows
                for source, n in counts["read"].items():
                    read_by_source[source] += n
                problems.update(counts["problems"])
                invalid_by_file[path] += counts["problems"]["invalid UTF-8"]
                lines_by_file[path] += counts["lines"]
                dropped += counts["dropped"]
                kept_empty += counts["kept_empty"]
            runs_on = eng.where
        for path, lines in lines_by_file.items():
            check_utf8_share(path, invalid_by_file[path], lines)
        if not any(n for src, n in read_by_source.items() if src != "test"):
            raise PipelineError(f"clean {corpus}: no valid training rows in {raw_dir} "
                                f"({', '.join(f'{n:,} {r}' for r, n in problems.items()) or 'no data lines'}) - "
                                f"check the declaration {spec.origin} with `ksent corpus check {corpus}`")
        write_json(out.path("normalizer.json"), normalizer.to_dict())

        read_by_source = {src: n for src, n in read_by_source.items() if n}
        read = sum(read_by_source.values()) + sum(problems.values())
        by_source = ", ".join(f"{src} {n:,}" for src, n in sorted(read_by_source.items(), reverse=True))
        details = [f"{n:,} {reason}" for reason, n in sorted(problems.items())]
        details.append(f"{dropped:,} empty after cleaning dropped")
        if kept_empty:
            details.append(f"{kept_empty:,} empty test rows kept")
        summary = f"clean {corpus}: {read:,} rows read ({by_source}) -> {rows_out:,} rows ({'; '.join(details)})"
        return StageResult(summary=summary, counts={
            "rows_read": read, "rows_read_by_source": read_by_source, "malformed": dict(problems),
            "empty_dropped": dropped, "empty_test_kept": kept_empty, "rows_out": rows_out,
            "partitions": len(parts), "engine": runs_on})

    return run_stage(stage, run, force=force, echo=echo)
