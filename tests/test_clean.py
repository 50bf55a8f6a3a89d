"""Normalization profiles (property-based) and the clean stage's counts."""
from __future__ import annotations

import re
import unicodedata

import pandas as pd
import pytest
from hypothesis import given, strategies as st

from pipeline.errors import PipelineError
from pipeline.stages import clean as clean_stage
from pipeline.stages.clean import clean
from pipeline.stages.download import download
from pipeline.text.normalize import Normalizer, squeeze_repeats
from tests.helpers import register_tiny, write_nsmc_file

korean_text = st.text(alphabet=st.sampled_from(list("가나다라마바사아자차카타파하ㅋㅎㅠ 123abcABC!?.,'()\t\n😀")))


@given(st.text())
def test_hangul_profile_output_alphabet(text):
    out = Normalizer("hangul")(text)
    assert re.fullmatch(r"[ㄱ-ㅎㅏ-ㅣ가-힣0-9]*( [ㄱ-ㅎㅏ-ㅣ가-힣0-9]+)*", out)


@given(st.text())
def test_hangul_latin_profile_output_alphabet(text):
    out = Normalizer("hangul-latin")(text)
    assert re.fullmatch(r"[ㄱ-ㅎㅏ-ㅣ가-힣a-z0-9(),!?']*( [ㄱ-ㅎㅏ-ㅣ가-힣a-z0-9(),!?']+)*", out)


@given(korean_text, st.sampled_from(["hangul", "hangul-latin", "none"]), st.integers(0, 3))
def test_normalization_is_idempotent(text, profile, squeeze):
    normalize = Normalizer(profile, squeeze)
    once = normalize(text)
    assert normalize(once) == once


@given(korean_text, st.integers(1, 4))
def test_squeeze_bounds_every_run(text, keep):
    out = squeeze_repeats(text, keep)
    assert not re.search(r"(.)\1{%d}" % keep, out)
    assert squeeze_repeats(out, keep) == out


def test_profiles_on_examples():
    assert Normalizer("hangul")("흠...포스터보고 초딩영화줄....오버연기조차 ㅋㅋㅋㅋㅋㅋ 10점!") == \
        "흠 포스터보고 초딩영화줄 오버연기조차 ㅋㅋ 10점"
    assert Normalizer("hangul-latin")("Good 영화! (정말) it's 최고?") == "good 영화 ! ( 정말 ) it ' s 최고 ?"
    assert Normalizer("hangul", squeeze=0)("ㅋㅋㅋㅋ") == "ㅋㅋㅋㅋ"
    assert Normalizer("hangul")("😀👍 wow") == ""


def test_decomposed_hangul_is_composed_not_deleted():
    decomposed = unicodedata.normalize("NFD", "재밌다")   # as text saved on macOS often is
    assert decomposed != "재밌다"
    assert Normalizer("hangul")(decomposed) == "재밌다"


def test_unknown_profile_is_a_clear_error():
    with pytest.raises(PipelineError, match="unknown clean profile 'x'; choose one of"):
        Normalizer("x")


def test_clean_stage_counts_and_keeps_empty_test_rows(tmp_path, tiny_corpus, monkeypatch):
    raw = tiny_corpus / "tiny"
    write_nsmc_file(raw / "ratings_train.txt", [("좋아요!!", 1), ("^^", 1), ("", 0), ("별로 ㅠㅠㅠㅠ", 0)],
                    extra_lines=("9\t라벨 없음", "10\t나쁜 라벨\t7"))
    write_nsmc_file(raw / "ratings_test.txt", [("재밌다", 1), ("!!!", 0)], start_id=50)
    register_tiny(monkeypatch, tiny_corpus)
    data = tmp_path / "d"
    (data / "raw").mkdir(parents=True)
    (data / "raw" / "tiny").symlink_to(raw)   # the stage reads only data/raw/<corpus>
    lines = []
    result = clean("tiny", data_dir=data, echo=lines.append)
    assert result.counts["rows_read"] == 8
    assert result.counts["malformed"] == {"wrong field count": 1, "unmapped label": 1}
    assert result.counts["empty_dropped"] == 2 and result.counts["empty_test_kept"] == 1
    table = pd.read_parquet(data / "interim" / "tiny" / "clean.parquet")
    assert table["text"].tolist() == ["좋아요", "별로 ㅠㅠ", "재밌다", ""]
    assert table["raw"].tolist() == ["좋아요!!", "별로 ㅠㅠㅠㅠ", "재밌다", "!!!"]
    assert "8 rows read" in lines[0] and "1 unmapped label" in lines[0] and "1 empty test rows kept" in lines[0]

    again = clean("tiny", data_dir=data, echo=lines.append)
    assert again.skipped and "up to date" in lines[-1]
    changed = clean("tiny", data_dir=data, drop_empty_test=True, echo=lines.append)
    assert not changed.skipped and changed.counts["rows_out"] == 3


def test_clean_stage_without_raw_files_says_what_to_do(tmp_path, tiny_corpus):
    with pytest.raises(PipelineError, match="missing input .* run the earlier stages first"):
        clean("tiny", data_dir=tmp_path / "empty")


def test_interrupted_stage_keeps_previous_output(tmp_path, tiny_corpus, monkeypatch):
    data = tmp_path / "d"
    download("tiny", data_dir=data, mirror=str(tiny_corpus), echo=lambda line: None)
    clean("tiny", data_dir=data, echo=lambda line: None)
    target = data / "interim" / "tiny" / "clean.parquet"
    before = target.read_bytes()

    def fail(*args, **kwargs):
        raise KeyboardInterrupt
    monkeypatch.setattr(clean_stage.ParquetRowGroupWriter, "write", fail)
    with pytest.raises(KeyboardInterrupt):
        clean("tiny", data_dir=data, profile="hangul-latin", echo=lambda line: None)
    assert target.read_bytes() == before
    assert [p.name for p in target.parent.iterdir() if p.name.endswith(".part")] == []
