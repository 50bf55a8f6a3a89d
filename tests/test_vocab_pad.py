"""Vocabulary (fit on train only, JSON round trip) and padding with Keras semantics."""
from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings, strategies as st

from pipeline.text.sequences import length_for_coverage, pad_sequences
from pipeline.text.vocab import OOV_ID, PAD_ID, Vocabulary

tokens = st.text(alphabet="가나다라마바사ㅋab", min_size=1, max_size=3)
docs = st.lists(st.lists(tokens, max_size=8), max_size=30)


@given(docs, docs, st.integers(0, 20), st.integers(1, 3))
def test_vocabulary_json_round_trip_gives_identical_ids(train, new, max_words, min_freq):
    max_words = max_words + 3 if max_words else 0
    vocab = Vocabulary(max_words=max_words, min_freq=min_freq).fit(train)
    restored = Vocabulary.from_dict(json.loads(json.dumps(vocab.to_dict(), ensure_ascii=False)))
    assert restored.transform(new) == vocab.transform(new)
    assert restored.size == vocab.size
    if max_words:
        assert vocab.size <= max_words


@given(docs)
def test_ids_are_deterministic_and_reserved_ids_unused(train):
    vocab = Vocabulary().fit(train)
    assert Vocabulary().fit(list(reversed(train))).tokens == vocab.tokens
    ids = [i for seq in vocab.transform(train) for i in seq]
    assert PAD_ID not in ids and OOV_ID not in ids


def test_vocabulary_orders_by_frequency_and_applies_limits():
    vocab = Vocabulary(min_freq=2).fit([["나", "가", "다"], ["가", "나"], ["가", "라"]])
    assert vocab.tokens == ["가", "나"]               # ties broken by the token, rare ones dropped
    assert vocab.transform([["가", "나", "다", "없음"]]) == [[2, 3, OOV_ID, OOV_ID]]
    assert Vocabulary(max_words=3).fit([["가", "가", "나"]]).tokens == ["가"]
    with pytest.raises(ValueError):
        Vocabulary(max_words=2)


def test_token_seen_only_in_test_is_oov():
    vocab = Vocabulary().fit([["좋다", "영화"]])
    assert vocab.transform([["좋다", "테스트에만"]]) == [[vocab.transform([["좋다"]])[0][0], OOV_ID]]
    assert vocab.oov_rate([["좋다", "테스트에만"]]) == 0.5


@settings(deadline=None, max_examples=60)
@given(st.lists(st.lists(st.integers(1, 50), max_size=12), max_size=10), st.integers(1, 10),
       st.sampled_from(["pre", "post"]), st.sampled_from(["pre", "post"]))
def test_pad_sequences_matches_keras(seqs, maxlen, padding, truncating):
    import keras
    expected = keras.utils.pad_sequences(seqs, maxlen=maxlen, padding=padding, truncating=truncating, value=0)
    ours = pad_sequences(seqs, maxlen, padding=padding, truncating=truncating)
    assert ours.dtype == np.int32
    np.testing.assert_array_equal(ours, expected.reshape(len(seqs), maxlen))


def test_length_for_coverage():
    lengths = list(range(1, 101))
    assert length_for_coverage(lengths, 0.95) == 95
    assert length_for_coverage(lengths, 1.0) == 100
    assert length_for_coverage([0, 0, 0], 0.95) == 1
    assert length_for_coverage([], 0.95) == 1
