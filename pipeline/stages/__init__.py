"""One module per stage (registered in pipeline.graph); stage modules never import each other."""
from __future__ import annotations

from pathlib import Path

from pipeline import layout
from pipeline.core.stage import Input


def tokenized_inputs(data_dir: Path | str, corpus: str, tok: str) -> dict[str, Input]:
    """What the stages after tokenize read: the tokens (and segmenter) of tokenization `tok`, with the
    split and the normalization they go with."""
    interim, folder, label = layout.interim_dir(data_dir, corpus), layout.processed_dir(data_dir, corpus, tok), \
        layout.label(corpus, tok)
    return {"tokens.parquet": Input(folder / "tokens.parquet", "tokenize", label=label),
            "segmenter.json": Input(folder / "segmenter.json", "tokenize", label=label),
            "split.parquet": Input(interim / "split.parquet", "split", label=corpus),
            "normalizer.json": Input(interim / "normalizer.json", "clean", label=corpus)}
