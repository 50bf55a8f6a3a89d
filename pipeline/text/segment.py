"""Segmentation: cleaned text -> token strings, by words, characters (or jamo) or morphemes.

    >>> Segmenter("word").segment("정말 재밌다")
    ['정말', '재밌다']
    >>> Segmenter("char", jamo=True).segment("한글")
    ['ㅎ', 'ㅏ', 'ㄴ', 'ㄱ', 'ㅡ', 'ㄹ']
    >>> Segmenter("morpheme", backend="mecab", pos_filter=("NN", "VA")).segment("영화가 재밌다")
    ['영화', '재밌']

A `Segmenter` is a frozen, hashable value that round-trips through `to_dict`/`from_dict`
(saved as segmenter.json and inside tokenizer.json), so `predict` segments exactly as
training did. Morpheme analyzers are the pluggable backends of `pipeline.text.morph`.

`pipeline.text.pool.segment_many` is order preserving and deterministic: the output does not depend on
the number of workers (each document is analyzed on its own). It is prediction's path
(`ksent predict --file`, the Python API): morpheme analysis with several workers runs in
the worker processes of pipeline.text.pool.SegmentPool; kiwi uses its own threads instead.
The data stages segment on their engine instead (pipeline.core.engine: Dask, partitions of a table).
"""
from __future__ import annotations

import contextlib
import sys
import unicodedata
import warnings
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

from pipeline.errors import PipelineError
from pipeline.text import morph

KINDS = ("word", "char", "morpheme")
BLOCK = 1000          # documents per progress-bar update in-process


# --- jamo ------------------------------------------------------------------------------------
# A precomposed syllable U+AC00 + (initial * 21 + medial) * 28 + final decomposes by
# arithmetic into 19 initials, 21 medials and 27 finals (+ none). We emit *compatibility*
# jamo (U+3131..U+318E, ㄱ ㅏ ...) rather than conjoining jamo (U+1100..U+11FF): they are
# the letters people type on their own in reviews (ㅋㅋ, ㅠㅠ, ㅡㅡ), so the ㅋ of 킄 and a
# typed ㅋ share one vocabulary entry. The price: an initial and a final consonant look
# the same (the ㄴ of 나 and of 안), so the position is implicit in the sequence order.
# The tables are derived from the Unicode names (HANGUL CHOSEONG KIYEOK -> HANGUL LETTER KIYEOK).

def _compatibility(conjoining: int) -> str:
    name = unicodedata.name(chr(conjoining))          # e.g. "HANGUL JONGSEONG RIEUL-KIYEOK"
    return unicodedata.lookup("HANGUL LETTER " + name.split(" ", 2)[2])


_INITIALS = tuple(_compatibility(cp) for cp in range(0x1100, 0x1113))         # 19
_MEDIALS = tuple(_compatibility(cp) for cp in range(0x1161, 0x1176))          # 21
_FINALS = ("",) + tuple(_compatibility(cp) for cp in range(0x11A8, 0x11C3))   # 1 + 27
_SYLLABLE_BASE, _SYLLABLES = 0xAC00, 19 * 21 * 28


def jamo_tokens(text: str) -> list[str]:
    """One token per jamo of each Hangul syllable; other non-space characters pass through."""
    out: list[str] = []
    for ch in text:
        s = ord(ch) - _SYLLABLE_BASE
        if 0 <= s < _SYLLABLES:
            out.append(_INITIALS[s // 588])
            out.append(_MEDIALS[s % 588 // 28])
            if s % 28:
                out.append(_FINALS[s % 28])
        elif not ch.isspace():
            out.append(ch)
    return out


# --- the segmenter ---------------------------------------------------------------------------

def _as_tuple(value, what: str) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        value = (value,)
    items = tuple(value)
    if not all(isinstance(v, str) and v for v in items):
        raise PipelineError(f"{what} must be non-empty strings, got {items!r}")
    return items


@dataclass(frozen=True)
class Segmenter:
    """How text becomes tokens. See the module docstring.

    kind: "word" (split on whitespace), "char" (every non-space character, or its jamo
        with `jamo=True`) or "morpheme" (a morpheme analyzer's output).
    backend, backend_options: the morpheme analyzer (default `morph.DEFAULT_BACKEND`)
        and its options (a mapping or (key, value) pairs, stored as sorted pairs with the
        backend's defaults filled in, e.g. (("max_chunk", 150), ("norm", False), ("stem", False))).
    pos_filter: keep only morphemes whose tag starts with one of these prefixes (() = all).
    stopwords: tokens dropped after segmentation (any kind; compared with the morpheme, not its tag).
    with_tags: emit "morpheme/TAG" tokens.
    """
    kind: str
    jamo: bool = False
    backend: str | None = None
    backend_options: tuple[tuple[str, Any], ...] = ()
    pos_filter: tuple[str, ...] = ()
    stopwords: tuple[str, ...] = ()
    with_tags: bool = False

    def __post_init__(self):
        set_ = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        if self.kind not in KINDS:
            raise PipelineError(f"unknown tokenizer {self.kind!r}; choose one of: {', '.join(KINDS)}")
        if self.jamo and self.kind != "char":
            raise PipelineError("jamo=True applies to the char tokenizer only")
        set_("pos_filter", _as_tuple(self.pos_filter, "pos_filter"))
        set_("stopwords", _as_tuple(self.stopwords, "stopwords"))
        options = self.backend_options
        if isinstance(options, Mapping):
            options = options.items()
        options = dict(options or ())
        if self.kind == "morpheme":
            backend = self.backend or morph.DEFAULT_BACKEND
            resolved = morph.backend_class(backend).resolve_options(options)  # unknown -> PipelineError
            set_("backend", backend)
            set_("backend_options", tuple(sorted(resolved.items())))
        elif self.backend or options or self.pos_filter or self.with_tags:
            raise PipelineError("backend, backend_options, pos_filter and with_tags apply to the "
                                f"morpheme tokenizer only, not {self.kind!r}")
        else:
            set_("backend_options", ())
        set_("_stopset", frozenset(self.stopwords))

    # --- identity ---------------------------------------------------------------------------
    def name(self) -> str:
        """Directory name under data/processed/<corpus>/ (filters and options live in the manifest)."""
        if self.kind == "morpheme":
            return f"morpheme-{self.backend}"
        return "char-jamo" if self.jamo else self.kind

    def to_dict(self) -> dict:
        d = {"kind": self.kind, "jamo": self.jamo, "backend": self.backend,
             "backend_options": dict(self.backend_options), "backend_version": None,
             "pos_filter": list(self.pos_filter), "stopwords": list(self.stopwords),
             "with_tags": self.with_tags}
        if self.kind == "morpheme":
            d["backend_version"] = morph.backend_class(self.backend).version()
        return d

    @classmethod
    def from_dict(cls, d: Mapping) -> Segmenter:
        """Rebuild a saved segmenter; PipelineError if its backend is unknown or cannot load here.

        Warns (`warnings.warn`) when the installed backend version differs from the recorded one.
        """
        if not isinstance(d, Mapping) or "kind" not in d:
            raise PipelineError(f"not a segmenter description: {d!r}")
        known = {f.name for f in fields(cls)}
        seg = cls(**{k: v for k, v in d.items() if k in known})
        if seg.kind == "morpheme":
            backend = morph.backend_class(seg.backend)
            backend.check_available()
            installed, recorded = backend.version(), d.get("backend_version")
            if recorded and installed != recorded:
                warnings.warn(f"morpheme backend {seg.backend!r}: the tokens were made with version "
                              f"{recorded}, this installation has {installed} - segmentation, and so "
                              f"predictions, may differ", stacklevel=2)
        return seg

    # --- segmentation -----------------------------------------------------------------------
    def _analyzer(self, threads: int = 1) -> morph.MorphBackend:
        return morph.get_backend(self.backend, self.backend_options, threads=threads)

    def _from_pairs(self, pairs: Iterable[tuple[str, str]]) -> list[str]:
        prefixes, stop = self.pos_filter, self._stopset
        if prefixes:
            pairs = [(m, t) for m, t in pairs if t.startswith(prefixes)]
        if stop:
            pairs = [(m, t) for m, t in pairs if m not in stop]
        if self.with_tags:
            return [f"{m}/{t}" for m, t in pairs]
        return [m for m, _ in pairs]

    def segment(self, text: str) -> list[str]:
        """Tokens of one (cleaned) text; [] for empty or whitespace-only text."""
        if not text or text.isspace():
            return []
        if self.kind == "morpheme":
            return self._from_pairs(self._analyzer().analyze(text))
        if self.kind == "word":
            tokens = text.split()
        elif self.jamo:
            tokens = jamo_tokens(text)
        else:
            tokens = [ch for ch in text if not ch.isspace()]
        if self._stopset:
            tokens = [t for t in tokens if t not in self._stopset]
        return tokens

    def uses_processes(self, workers: int, n_texts: int) -> bool:
        """Whether `workers` workers for `n_texts` texts means analyzer processes (pipeline.text.pool): morpheme
        analysis by a backend without threads of its own; word/char always run in this process (they are cheap)."""
        return (self.kind == "morpheme" and workers > 1 and n_texts > 1
                and morph.backend_class(self.backend).parallel != "thread")

    def segment_in_process(self, texts: Sequence[str], workers: int = 1,
                           progress: bool = True) -> list[list[str]]:
        """`segment` of every text, in order, in this process (kiwi: its own `workers` threads); identical output
        for any number of workers. pipeline.text.pool.segment_many adds worker processes for the other
        morpheme analyzers."""
        texts = list(texts)
        workers = max(1, int(workers or 1))
        if (self.kind == "morpheme" and workers > 1 and len(texts) > 1
                and morph.backend_class(self.backend).parallel == "thread"):
            return self._segment_threaded(texts, workers, progress)
        out: list[list[str]] = []
        with progress_bar(len(texts), progress, f"tokenize {self.name()}") as bar:
            for start in range(0, len(texts), BLOCK):
                block = texts[start:start + BLOCK]
                out.extend(self.segment(t) for t in block)
                bar.update(len(block))
        return out

    def _segment_threaded(self, texts: list[str], threads: int, progress: bool) -> list[list[str]]:
        analyzer = self._analyzer(threads=threads)
        out: list[list[str]] = []
        with progress_bar(len(texts), progress, f"tokenize {self.name()}") as bar:
            for start in range(0, len(texts), BLOCK * threads):
                block = [t if t and not t.isspace() else "" for t in texts[start:start + BLOCK * threads]]
                out.extend(self._from_pairs(pairs) if t else []
                           for t, pairs in zip(block, analyzer.analyze_many(block), strict=True))
                bar.update(len(block))
        return out

    def workers_used(self, workers: int | None) -> int:
        """How many workers `pipeline.text.pool.segment_many(self, texts, workers)` really uses (word/char: 1)."""
        return max(1, int(workers or 1)) if self.kind == "morpheme" else 1

    def warm_up(self) -> None:
        """Load the analyzer (and, for Okt, start the JVM) before the first real document."""
        if self.kind == "morpheme":
            self._analyzer().analyze("영화가 정말 재밌었어요")


class _NoBar(contextlib.AbstractContextManager):
    def __exit__(self, *exc) -> None:
        pass

    def update(self, n: int) -> None:
        pass


def progress_bar(total: int, progress: bool, desc: str):
    """tqdm's bar on a terminal; in logs, pipes and with progress off, nothing (nor tqdm's import time)."""
    if not progress or not sys.stderr.isatty():
        return _NoBar()
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="doc", unit_scale=True, file=sys.stderr, mininterval=0.5)
