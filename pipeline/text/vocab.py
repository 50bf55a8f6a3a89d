"""Vocabulary: token strings -> integer ids, fit on training rows only.

Reserved ids: 0 = padding, 1 = out-of-vocabulary. Ids are assigned by descending
training frequency, ties broken by the token itself, so the same training rows
always give the same ids (a plain Counter would break ties by insertion order).
"""
from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

PAD_ID = 0
OOV_ID = 1
_RESERVED = 2


class Vocabulary:
    def __init__(self, max_words: int = 0, min_freq: int = 1):
        if max_words and max_words <= _RESERVED:
            raise ValueError(f"max_words must be 0 (no limit) or > {_RESERVED}, got {max_words}")
        self.max_words = max_words      # size limit, reserved ids included; 0 = no limit
        self.min_freq = max(1, min_freq)
        self.tokens: list[str] = []     # tokens[i] has id i + 2
        self._ids: dict[str, int] = {}

    def fit(self, token_lists: Iterable[Sequence[str]]) -> Vocabulary:
        return self.fit_counts(Counter(tok for tokens in token_lists for tok in tokens))

    def fit_counts(self, counts: Mapping[str, int]) -> Vocabulary:
        """`fit` from token counts (e.g. counted per partition and summed): the same ids."""
        ranked = sorted((item for item in counts.items() if item[1] >= self.min_freq),
                        key=lambda item: (-item[1], item[0]))
        if self.max_words:
            ranked = ranked[: self.max_words - _RESERVED]
        self._set_tokens([tok for tok, _ in ranked])
        return self

    def extend(self, counted: Iterable[tuple[str, int]], limit: int) -> Vocabulary:
        """Append up to `limit` of the (token, count) pairs not in the vocabulary yet, most frequent first.

        For tokens that have pretrained vectors but were too rare in train (or absent): their
        ids come after every train token's, so a vocabulary fit on the same train rows keeps
        its ids.
        """
        ranked = sorted(((tok, n) for tok, n in counted if tok not in self._ids), key=lambda item: (-item[1], item[0]))
        self._set_tokens(self.tokens + [tok for tok, _ in ranked[:max(0, limit)]])
        return self

    def merged(self, others: Iterable[Vocabulary]) -> Vocabulary:
        """This vocabulary with every token of `others` it lacks appended, in their id order: its own ids stay
        as they are (a network trained on it keeps its Embedding rows), and each other's tokens are known."""
        tokens = list(self.tokens)
        known = set(tokens)
        for other in others:
            for tok in other.tokens:
                if tok not in known:
                    known.add(tok)
                    tokens.append(tok)
        vocab = Vocabulary(max_words=0, min_freq=self.min_freq)
        vocab._set_tokens(tokens)
        return vocab

    def id_map(self, other: Vocabulary, missing: int = OOV_ID) -> np.ndarray:
        """int32 array: `other`'s id -> this vocabulary's id for the same token (padding and OOV kept; `missing`
        for a token this one lacks)."""
        ids = self._ids
        return np.array([PAD_ID, OOV_ID, *(ids.get(tok, missing) for tok in other.tokens)], dtype=np.int32)

    def _set_tokens(self, tokens: list[str]) -> None:
        self.tokens = tokens
        self._ids = {tok: i + _RESERVED for i, tok in enumerate(tokens)}

    @property
    def size(self) -> int:
        """Number of ids, reserved ones included (the Embedding's input_dim)."""
        return len(self.tokens) + _RESERVED

    def transform(self, token_lists: Iterable[Sequence[str]]) -> list[list[int]]:
        ids = self._ids
        return [[ids.get(tok, OOV_ID) for tok in tokens] for tokens in token_lists]

    def oov_rate(self, token_lists: Iterable[Sequence[str]]) -> float:
        total = oov = 0
        for tokens in token_lists:
            total += len(tokens)
            oov += sum(tok not in self._ids for tok in tokens)
        return oov / total if total else 0.0

    def to_dict(self) -> dict:
        return {"max_words": self.max_words, "min_freq": self.min_freq,
                "pad_id": PAD_ID, "oov_id": OOV_ID, "tokens": self.tokens}

    @classmethod
    def from_dict(cls, d: dict) -> Vocabulary:
        if d.get("pad_id", PAD_ID) != PAD_ID or d.get("oov_id", OOV_ID) != OOV_ID:
            raise ValueError("vocabulary uses different reserved ids than this ksent (0 = pad, 1 = OOV)")
        vocab = cls(max_words=d["max_words"], min_freq=d["min_freq"])
        vocab._set_tokens(list(d["tokens"]))
        return vocab
