"""tokenize: segment every cleaned, deduplicated review into tokens.

Input: data/interim/<corpus>/dedupe.parquet (id, text, label, rating, source).
Outputs in data/processed/<corpus>/<tok>/ (`<tok>` = `Segmenter.name()`, e.g. morpheme-mecab):
- tokens.parquet: id (string), tokens (list<string>), the input's rows in the input's order;
- segmenter.json: `Segmenter.to_dict()`, which the pad stage puts into tokenizer.json.
The parameters are the segmenter's description, analyzer version included (a new
analyzer version re-runs the stage); the number of workers and the scheduler are not
parameters, since the tokens do not depend on them.

Morpheme analysis runs on the engine (pipeline.core.engine): one partition per row group of
dedupe.parquet, each worker process reading its row groups itself and building its
analyzer once. Word and character splitting is cheaper than shipping the tokens between
processes, so it runs in this process unless a scheduler is given.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa

from pipeline import layout
from pipeline.core.engine import DEFAULT_WORKERS, Engine
from pipeline.core.files import write_json
from pipeline.core.stage import Input, Stage, StageResult, Staging, Target, run_stage
from pipeline.core.tables import ParquetRowGroupWriter, read_rows, row_group_ranges
from pipeline.errors import check_number
from pipeline.text.segment import Segmenter

SCHEMA = pa.schema([("id", pa.string()), ("tokens", pa.list_(pa.string()))])


def plan(corpus: str, segmenter: Segmenter, *, data_dir: Path | str = layout.DATA_DIR) -> Stage:
    source = layout.interim_dir(data_dir, corpus) / "dedupe.parquet"
    tok = segmenter.name()
    # the parameters are the segmenter's description (raises PipelineError early if the backend is missing)
    return Stage("tokenize", layout.label(corpus, tok), layout.processed_dir(data_dir, corpus, tok),
                 inputs={"dedupe.parquet": Input(source, "dedupe", label=corpus)}, params=segmenter.to_dict(),
                 outputs=(layout.TOKENS_FILE, "segmenter.json"))


def plan_for(t: Target) -> Stage:
    return plan(t.corpus, t.segmenter, data_dir=t.data_dir)


def run_for(t: Target, **kwargs) -> StageResult:
    return tokenize(t.corpus, t.segmenter, data_dir=t.data_dir, workers=t.workers, scheduler=t.scheduler, **kwargs)


def tokenize_rows(path: str, start: int, stop: int, corpus: str, segmenter: Segmenter) -> tuple[pa.Table, dict]:
    """Tokens of rows [start, stop) of dedupe.parquet at `path`, and their counts (runs on a worker)."""
    rows = read_rows(path, start, stop, "dedupe", corpus, ["id", "text"]).to_pandas()
    texts = rows["text"].fillna("").astype(str).tolist()
    tokens = [segmenter.segment(t) for t in texts]
    table = pa.table({"id": pa.array(rows["id"].astype("string"), type=pa.string()),
                      "tokens": pa.array(tokens, type=pa.list_(pa.string()))}, schema=SCHEMA)
    counts = {"docs": len(tokens), "tokens": sum(map(len, tokens)), "empty_docs": sum(1 for t in tokens if not t),
              "empty_texts": sum(1 for t in texts if not t.strip())}
    return table, counts


def tokenize(corpus: str, segmenter: Segmenter, *, data_dir: Path | str = layout.DATA_DIR, workers: int | None = None,
             scheduler: str | None = None, force: bool = False,
             echo: Callable[[str], None] | None = None) -> StageResult:
    if workers is not None:
        check_number("workers", workers, 1, integer=True)
    stage = plan(corpus, segmenter, data_dir=data_dir)
    name = segmenter.name()
    used = segmenter.workers_used(DEFAULT_WORKERS if workers is None else workers)
    if segmenter.kind == "morpheme":
        from pipeline.text import morph
        morph.backend_class(segmenter.backend).check_available()  # a clear error here, not in a worker

    def run(out: Staging) -> StageResult:
        source = str(stage.inputs["dedupe.parquet"].path.resolve())
        parts = [(source, start, stop, corpus, segmenter) for start, stop in row_group_ranges(source)]
        counts = {"docs": 0, "tokens": 0, "empty_docs": 0, "empty_texts": 0}
        with ParquetRowGroupWriter(out.path(layout.TOKENS_FILE), SCHEMA) as writer, Engine(used, scheduler) as eng:
            for table, part_counts in _progress(eng.map(tokenize_rows, parts, what=f"tokenize {name}"),
                                                len(parts), f"tokenize {name}"):
                writer.write(table)
                for key, n in part_counts.items():
                    counts[key] += n
            runs_on = eng.where
        write_json(out.path("segmenter.json"), stage.params)
        counts.update(partitions=len(parts), engine=runs_on)
        per_doc = counts["tokens"] / counts["docs"] if counts["docs"] else 0.0
        summary = (f"tokenize {corpus}/{name}: {counts['docs']:,} docs -> {counts['tokens']:,} tokens "
                   f"({per_doc:.1f} per doc, {counts['empty_docs']:,} without tokens), {len(parts)} partitions "
                   f"on {runs_on}")
        return StageResult(summary=summary, counts=counts)

    return run_stage(stage, run, force=force, echo=echo)


def _progress(items, total: int, desc: str):
    from tqdm import tqdm
    # disable=None: shown on a terminal, silent in logs and pipes
    return tqdm(items, total=total, desc=desc, unit="part", disable=None, mininterval=0.5)
