"""The corpus registry: every corpus is a declaration (pipeline/corpora/builtin/*.toml, ./corpora/*.toml,
$KSENT_CORPORA; see pipeline.corpora.declaration), read on first use.

    spec.py         what a corpus is: files, format, columns, label rule, split (frozen dataclasses)
    declaration.py  TOML declarations: the schema, where they are found
    readers.py      reading the files (csv, tsv, jsonl, parquet, lines; gzip) in partitions into one table
"""
from __future__ import annotations

from collections.abc import Iterator, MutableMapping

from pipeline.corpora.readers import line_blocks, read_part, unquote_csv_field
from pipeline.corpora.spec import (
    ENCODING_FAILURE_SHARE,
    Corpus,
    CorpusFile,
    Format,
    LabelRule,
    RatingRule,
    SplitRule,
    check_utf8_share,
    file_checksum,
    git_blob_sha1,
    pinned_check,
    recorded_checksum,
    verify_file,
)
from pipeline.errors import PipelineError

__all__ = ["CORPORA", "ENCODING_FAILURE_SHARE", "Corpus", "CorpusFile", "Format", "LabelRule", "RatingRule",
           "SplitRule", "check_utf8_share", "file_checksum", "get_corpus", "git_blob_sha1", "line_blocks",
           "pinned_check", "read_part", "recorded_checksum", "reload", "unquote_csv_field", "verify_file"]


class Registry(MutableMapping):
    """name -> Corpus, discovered on first use (so that `--help` works with a broken declaration around)."""

    def __init__(self):
        self._corpora: dict[str, Corpus] | None = None

    def _all(self) -> dict[str, Corpus]:
        if self._corpora is None:
            from pipeline.corpora.declaration import discover

            self._corpora = discover()
        return self._corpora

    def __getitem__(self, name: str) -> Corpus:
        return self._all()[name]

    def __setitem__(self, name: str, corpus: Corpus) -> None:     # tests and benchmarks register fixtures
        self._all()[name] = corpus

    def __delitem__(self, name: str) -> None:
        del self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def reload(self) -> None:
        self._corpora = None


CORPORA = Registry()


def reload() -> None:
    """Read the declarations again (after one was written or changed)."""
    CORPORA.reload()


def get_corpus(name: str) -> Corpus:
    try:
        return CORPORA[name]
    except KeyError:
        raise PipelineError(f"unknown corpus {name!r}; known corpora: {', '.join(CORPORA)} (declare your own: "
                            f"see `ksent corpus --help`)") from None
