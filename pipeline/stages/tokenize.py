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

from pathlib import Path
from typing import Callable

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from pipeline.io import StageResult, atomic_path, run_stage, write_json
from pipeline.text.segment import DEFAULT_WORKERS, Segmenter


def tokenize(corpus: str, segmenter: Segmenter, *, data_dir: Path | str = "data", workers: int | None = None,
             force: bool = False, echo: Callable[[str], None] | None = None) -> StageResult:
    source = Path(data_dir) / "interim" / corpus / "dedupe.parquet"
    name = segmenter.name()
    out_dir = Path(data_dir) / "processed" / corpus / name
    outputs = {"tokens.parquet": out_dir / "tokens.parquet", "segmenter.json": out_dir / "segmenter.json"}
    params = segmenter.to_dict()   # raises PipelineError early if the backend is missing
    used = segmenter.workers_used(DEFAULT_WORKERS if workers is None else workers)

    def run() -> StageResult:
        rows = pd.read_parquet(source, columns=["id", "text"])
        texts = rows["text"].fillna("").astype(str).tolist()
        tokens = segmenter.segment_many(texts, workers=used, progress=True)
        table = pa.table({"id": pa.array(rows["id"].astype("string"), type=pa.string()),
                          "tokens": pa.array(tokens, type=pa.list_(pa.string()))})
        with atomic_path(outputs["tokens.parquet"]) as tmp:
            pq.write_table(table, tmp)
        write_json(outputs["segmenter.json"], params)

        n_docs, n_tokens = len(tokens), sum(map(len, tokens))
        counts = {"docs": n_docs, "tokens": n_tokens, "empty_docs": sum(1 for t in tokens if not t),
                  "empty_texts": sum(1 for t in texts if not t.strip()), "workers": used}
        per_doc = n_tokens / n_docs if n_docs else 0.0
        summary = (f"tokenize {corpus}/{name}: {n_docs:,} docs -> {n_tokens:,} tokens ({per_doc:.1f} per doc, "
                   f"{counts['empty_docs']:,} without tokens), {used} worker{'s' if used != 1 else ''}")
        return StageResult(summary=summary, counts=counts)

    return run_stage("tokenize", f"{corpus}/{name}", out_dir, inputs={"dedupe.parquet": source},
                     params=params, outputs=outputs, run=run, force=force, echo=echo)
