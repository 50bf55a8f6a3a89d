"""tokenize: segment every cleaned, deduplicated review into tokens.

Input: data/interim/<corpus>/dedupe.parquet (id, text, label, rating, source).
Outputs in data/processed/<corpus>/<tok>/ (`<tok>` = `Segmenter.name()`, e.g. morpheme-mecab):
- tokens.parquet: id (string), tokens (list<string>), the input's rows in the input's order;
- segmenter.json: `Segmenter.to_dict()`, which the pad stage puts into tokenizer.json.
The parameters are the segmenter's description, analyzer version included (a new
analyzer version re-runs the stage); the number of workers is not a parameter, since
the tokens do not depend on it.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.io import Input, Stage, StageResult, Staging, check_number, read_table, run_stage, write_json
from pipeline.text.segment import DEFAULT_WORKERS, Segmenter


def plan(corpus: str, segmenter: Segmenter, *, data_dir: Path | str = "data") -> Stage:
    source = Path(data_dir) / "interim" / corpus / "dedupe.parquet"
    # the parameters are the segmenter's description (raises PipelineError early if the backend is missing)
    return Stage("tokenize", f"{corpus}/{segmenter.name()}", Path(data_dir) / "processed" / corpus / segmenter.name(),
                 inputs={"dedupe.parquet": Input(source, "dedupe")}, params=segmenter.to_dict(),
                 outputs=("tokens.parquet", "segmenter.json"))


def tokenize(corpus: str, segmenter: Segmenter, *, data_dir: Path | str = "data", workers: int | None = None,
             force: bool = False, echo: Callable[[str], None] | None = None) -> StageResult:
    if workers is not None:
        check_number("workers", workers, 1, integer=True)
    stage = plan(corpus, segmenter, data_dir=data_dir)
    name = segmenter.name()
    used = segmenter.workers_used(DEFAULT_WORKERS if workers is None else workers)

    def run(out: Staging) -> StageResult:
        rows = read_table(stage.inputs["dedupe.parquet"].path, "dedupe", corpus, columns=["id", "text"])
        texts = rows["text"].fillna("").astype(str).tolist()
        tokens = segmenter.segment_many(texts, workers=used, progress=True)
        table = pa.table({"id": pa.array(rows["id"].astype("string"), type=pa.string()),
                          "tokens": pa.array(tokens, type=pa.list_(pa.string()))})
        pq.write_table(table, out.path("tokens.parquet"))
        write_json(out.path("segmenter.json"), stage.params)

        n_docs, n_tokens = len(tokens), sum(map(len, tokens))
        counts = {"docs": n_docs, "tokens": n_tokens, "empty_docs": sum(1 for t in tokens if not t),
                  "empty_texts": sum(1 for t in texts if not t.strip()), "workers": used}
        per_doc = n_tokens / n_docs if n_docs else 0.0
        summary = (f"tokenize {corpus}/{name}: {n_docs:,} docs -> {n_tokens:,} tokens ({per_doc:.1f} per doc, "
                   f"{counts['empty_docs']:,} without tokens), {used} worker{'s' if used != 1 else ''}")
        return StageResult(summary=summary, counts=counts)

    return run_stage(stage, run, force=force, echo=echo)
