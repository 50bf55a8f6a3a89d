"""The replayable preprocessing saved as tokenizer.json: normalize -> segment -> ids -> pad.

The clean, tokenize and pad stages each apply one step of it to the corpus; a
`Preprocessor` holds all four steps with their fitted state, so `predict` replays
exactly what training saw, and the bundle can check it belongs to its model.
"""
from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pipeline.errors import PipelineError
from pipeline.text.normalize import Normalizer
from pipeline.text.segment import Segmenter
from pipeline.text.sequences import MAXLEN_LIMIT, pad_sequences
from pipeline.text.vocab import Vocabulary

FORMAT = "ksent-tokenizer"
FORMAT_VERSION = 1


@dataclass
class Preprocessor:
    normalizer: Normalizer
    segmenter: Segmenter
    vocabulary: Vocabulary
    maxlen: int
    padding: str = "pre"
    truncating: str = "pre"

    @property
    def name(self) -> str:
        return self.segmenter.name()

    @property
    def vocab_size(self) -> int:
        return self.vocabulary.size

    def transform(self, texts: Sequence[str], workers: int = 1, progress: bool = False) -> np.ndarray:
        cleaned = [self.normalizer(text) for text in texts]
        if workers <= 1:                # in this process: no need to import the pool's multiprocessing at start-up
            return self.ids(self.segmenter.segment_in_process(cleaned, progress=progress))
        from pipeline.text.pool import segment_many

        return self.ids(segment_many(self.segmenter, cleaned, workers=workers, progress=progress))

    def ids(self, token_lists: Sequence[Sequence[str]]) -> np.ndarray:
        """Padded int32 ids (n, maxlen) of segmented texts: the steps after segmentation."""
        return self.pad(self.vocabulary.transform(token_lists))

    def pad(self, id_lists: Sequence[Sequence[int]]) -> np.ndarray:
        return pad_sequences(id_lists, self.maxlen, padding=self.padding, truncating=self.truncating)

    def merged(self, others: Sequence[Preprocessor]) -> Preprocessor:
        """One preprocessing for the texts of this one and `others` (each corpus's, say): the same normalizer,
        segmenter and padding - else PipelineError naming what differs -, this vocabulary with the others' tokens
        appended (`Vocabulary.merged`: this one's ids unchanged) and the longest maxlen."""
        for other in others:
            for what, mine, theirs in (("normalizer", self.normalizer.to_dict(), other.normalizer.to_dict()),
                                       ("segmenter", self.segmenter.to_dict(), other.segmenter.to_dict()),
                                       ("padding", (self.padding, self.truncating),
                                        (other.padding, other.truncating))):
                if mine != theirs:
                    raise PipelineError(f"the preprocessings differ in their {what}: {mine} against {theirs}")
        return Preprocessor(self.normalizer, self.segmenter, self.vocabulary.merged(o.vocabulary for o in others),
                            max([self.maxlen, *(o.maxlen for o in others)]), self.padding, self.truncating)

    def reindex(self, x: np.ndarray, source: Preprocessor) -> np.ndarray:
        """`source`'s padded ids `x` as this preprocessing's (a `merged` one's): each token's id here, padded to
        this maxlen. The same as `self.transform` of the texts, except that tokens `source` cut off (beyond its
        maxlen) stay cut off."""
        ids = self.vocabulary.id_map(source.vocabulary)[np.asarray(x)]
        extra = self.maxlen - ids.shape[1]
        if extra < 0:
            raise PipelineError(f"cannot reindex rows of {ids.shape[1]} ids to maxlen {self.maxlen}")
        pad = np.zeros((len(ids), extra), dtype=ids.dtype)
        return np.hstack([pad, ids] if self.padding == "pre" else [ids, pad])

    def to_dict(self) -> dict:
        return {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "normalizer": self.normalizer.to_dict(),
            "segmenter": self.segmenter.to_dict(),
            "maxlen": self.maxlen,
            "padding": self.padding,
            "truncating": self.truncating,
            "vocabulary": self.vocabulary.to_dict(),
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), ensure_ascii=False, indent=1) + "\n"

    def fingerprint(self) -> str:
        canonical = json.dumps(self.to_dict(), ensure_ascii=False, sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()

    @classmethod
    def from_dict(cls, d: dict) -> Preprocessor:
        if not isinstance(d, dict) or d.get("format") != FORMAT:
            raise PipelineError("not a ksent tokenizer.json (missing \"format\": \"ksent-tokenizer\")")
        version = d.get("format_version")
        if version != FORMAT_VERSION:
            raise PipelineError(f"tokenizer.json has format version {version!r}; this ksent reads version "
                                f"{FORMAT_VERSION} - rebuild the model with this ksent or install the "
                                f"ksent version that wrote it")
        maxlen = d.get("maxlen")
        if isinstance(maxlen, bool) or not isinstance(maxlen, int) or not 1 <= maxlen <= MAXLEN_LIMIT:
            raise PipelineError(f"tokenizer.json has maxlen {maxlen!r}, not an integer from 1 to {MAXLEN_LIMIT:,} "
                                f"(the pad stage never writes one) - re-run the pad stage")
        try:
            return cls(normalizer=Normalizer.from_dict(d["normalizer"]),
                       segmenter=Segmenter.from_dict(d["segmenter"]),
                       vocabulary=Vocabulary.from_dict(d["vocabulary"]),
                       maxlen=maxlen, padding=d["padding"], truncating=d["truncating"])
        except (KeyError, TypeError, ValueError) as exc:
            raise PipelineError(f"tokenizer.json is incomplete or malformed ({exc!r})") from None

    @classmethod
    def from_json(cls, text: str) -> Preprocessor:
        try:
            d = json.loads(text)
        except ValueError as exc:
            raise PipelineError(f"tokenizer.json is not valid JSON ({exc})") from None
        return cls.from_dict(d)

    @classmethod
    def load(cls, path: Path | str) -> Preprocessor:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise PipelineError(f"cannot read {path}: {exc.strerror}") from None
        return cls.from_json(text)
