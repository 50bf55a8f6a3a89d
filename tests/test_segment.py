"""Segmentation (word / char / jamo / morpheme backends) and the tokenize stage."""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import unicodedata

import pandas as pd
import pytest
from hypothesis import given, settings, strategies as st

from pipeline.core.files import read_json
from pipeline.core.stage import adopt_outputs
from pipeline.errors import MissingInputError, PipelineError
from pipeline.stages.tokenize import tokenize
from pipeline.text import morph, pool as segment_pool
from pipeline.text.pool import SegmentPool, segment_many
from pipeline.text.segment import Segmenter, jamo_tokens

REVIEWS = [
    "영화가 정말 재밌었어요",
    "배우들 연기가 너무 좋았다",
    "스토리가 지루하고 별로였음",
    "최악의 영화 돈 아깝다",
    "아 더빙.. 진짜 짜증나네요 목소리",
    "흠...포스터보고 초딩영화줄....오버연기조차 가볍지 않구나",
    "너무재밓었다그래서보는것을추천한다",
    "교도소 이야기구먼 ..솔직히 재미는 없다..평점 조정",
    "사이몬페그의 익살스런 연기가 돋보였던 영화!스파이더맨에서 늙어보이기만 했던 커스틴 던스트가 너무나도 이뻐보였다",
    "막 걸음마 뗀 3세부터 초등학교 1학년생인 8살용영화.ㅋㅋㅋ...별반개도 아까움.",
    "원작의 긴장감을 제대로 살려내지못했다.",
    "별 반개도 아깝다 욕나온다 이응경 길용우 연기생활이몇년인지..정말 발로해도 그것보단 낫겟다",
    "액션이 없는데도 재미 있는 몇안되는 영화",
    "왜케 평점이 낮은건데? 꽤 볼만한데.. 헐리우드식 화려함에만 너무 길들여져 있나?",
    "걍인피니트가짱이다.진짜짱이다♥",
    "볼때마다 눈물나서 죽겠다90년대의 향수자극!!허진호는 감성절제멜로의 달인이다~",
    "ㅋㅋ 이건 꼭 봐야 함 강추",
    "OST가 좋아서 3번 봤어요 10점 만점에 10점",
    "",
    "   ",
]
# ~200 varied documents for the worker-count determinism checks
MANY = [f"{a} {b}" for a in REVIEWS[:14] for b in REVIEWS[4:18]][:200]


# --- word / char / jamo ------------------------------------------------------------------

def test_word_splits_on_whitespace():
    seg = Segmenter("word")
    assert seg.segment("정말  재밌다\t최고!") == ["정말", "재밌다", "최고!"]
    assert seg.segment("") == [] and seg.segment(" \n ") == []
    assert seg.name() == "word"


def test_char_drops_spaces():
    seg = Segmenter("char")
    assert seg.segment(" 한 글!a ") == ["한", "글", "!", "a"]
    assert seg.segment("  ") == []
    assert seg.name() == "char"


def test_jamo_decomposition():
    seg = Segmenter("char", jamo=True)
    assert seg.name() == "char-jamo"
    assert seg.segment("한글") == ["ㅎ", "ㅏ", "ㄴ", "ㄱ", "ㅡ", "ㄹ"]
    assert seg.segment("가") == ["ㄱ", "ㅏ"]                  # no final consonant: two jamo
    assert seg.segment("닭 값") == ["ㄷ", "ㅏ", "ㄺ", "ㄱ", "ㅏ", "ㅄ"]  # compound finals stay one jamo
    assert seg.segment("와ㅋㅋ a1!") == ["ㅇ", "ㅘ", "ㅋ", "ㅋ", "a", "1", "!"]  # non-syllables pass through
    # compatibility jamo (U+3131..U+318E): the ㅋ of 킥 is the typed ㅋ
    assert seg.segment("킥")[0] == "ㅋ" == "\u314b"


def test_jamo_tables_agree_with_unicode_for_every_syllable():
    for cp in range(0xAC00, 0xD7A4):
        syllable = chr(cp)
        conjoining = unicodedata.normalize("NFD", syllable)
        ours = jamo_tokens(syllable)
        assert len(ours) == len(conjoining)
        for mine, ref in zip(ours, conjoining, strict=True):
            assert 0x3131 <= ord(mine) <= 0x318E
            assert unicodedata.name(mine).split(" ", 2)[2] == unicodedata.name(ref).split(" ", 2)[2]


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_char_tokens_are_the_non_space_characters(text):
    assert "".join(Segmenter("char").segment(text)) == "".join(ch for ch in text if not ch.isspace())
    n_syllables = sum(0xAC00 <= ord(ch) <= 0xD7A3 for ch in text)
    assert len(Segmenter("char", jamo=True).segment(text)) >= len(Segmenter("char").segment(text)) + n_syllables


def test_stopwords_apply_to_word_tokens():
    assert Segmenter("word", stopwords=("정말",)).segment("정말 정말 재밌다") == ["재밌다"]


def test_invalid_combinations_are_rejected():
    with pytest.raises(PipelineError, match="unknown tokenizer"):
        Segmenter("sentencepiece")
    with pytest.raises(PipelineError, match="char tokenizer only"):
        Segmenter("word", jamo=True)
    with pytest.raises(PipelineError, match="morpheme tokenizer only"):
        Segmenter("char", pos_filter=("NN",))


# --- morpheme backends ------------------------------------------------------------------

def test_mecab_morphemes():
    seg = Segmenter("morpheme", backend="mecab", with_tags=True)
    assert seg.name() == "morpheme-mecab"
    assert seg.segment("영화가 정말 재밌었어요") == ["영화/NNG", "가/JKS", "정말/MAG", "재밌/VA", "었/EP", "어요/EF"]
    assert Segmenter("morpheme", backend="mecab").segment("최악의 영화 돈 아깝다") == \
        ["최악", "의", "영화", "돈", "아깝", "다"]
    # tabs/newlines/NUL cannot break the fast output parsing
    assert seg.segment("영화\t가\n정말\x00재밌었어요") == seg.segment("영화 가 정말 재밌었어요")
    assert seg.segment("   ") == []


def test_okt_morphemes_and_options():
    plain = Segmenter("morpheme", backend="okt", with_tags=True)
    assert plain.name() == "morpheme-okt"
    assert plain.segment("영화가 정말 재밌었어요") == ["영화/Noun", "가/Josa", "정말/Noun", "재밌었어요/Adjective"]
    stem = Segmenter("morpheme", backend="okt", backend_options={"stem": True})
    assert stem.segment("배우들 연기가 너무 좋았다") == ["배우", "들", "연기", "가", "너무", "좋다"]
    norm = Segmenter("morpheme", backend="okt", backend_options={"norm": True, "stem": True})
    assert norm.segment("이것도 되나욬ㅋㅋ") == ["이", "것", "도", "되다", "ㅋㅋ"]
    assert plain.backend_options == (("max_chunk", 150), ("norm", False), ("stem", False))


def test_okt_long_runs_are_cut_and_do_not_stall():
    cut = Segmenter("morpheme", backend="okt", backend_options={"max_chunk": 4})
    plain = Segmenter("morpheme", backend="okt")
    assert cut.segment("재밌었다영화 최고") == plain.segment("재밌었다 영화 최고")
    # a 2,000-character run without spaces: ~40 s without the cap, a few seconds with it
    tokens = Segmenter("morpheme", backend="okt").segment("존잼" * 1000)
    assert "".join(tokens) == "존잼" * 1000


def test_kiwi_morphemes():
    seg = Segmenter("morpheme", backend="kiwi", with_tags=True)
    assert seg.name() == "morpheme-kiwi"
    assert seg.segment("아 더빙.. 진짜 짜증나네요 목소리") == [
        "아/IC", "더빙/NNG", "../SF", "진짜/MAG", "짜증/NNG", "나/VV", "네요/EF", "목소리/NNG"]


def test_pos_filter_and_stopwords():
    seg = Segmenter("morpheme", backend="mecab", pos_filter=("NN", "VA"), stopwords=("영화",))
    assert seg.segment("최악의 영화 돈 아깝다") == ["최악", "돈", "아깝"]
    tagged = Segmenter("morpheme", backend="okt", pos_filter=("Noun", "Adjective"), with_tags=True)
    assert tagged.segment("스토리가 지루하고 별로였음") == ["스토리/Noun", "지루하고/Adjective", "별로/Noun"]


@pytest.mark.parametrize("backend", ["mecab", "okt", "kiwi"])
def test_output_does_not_depend_on_workers(backend):
    seg = Segmenter("morpheme", backend=backend)
    one = segment_many(seg, MANY, workers=1, progress=False)
    two = segment_many(seg, MANY, workers=2, progress=False)
    assert len(one) == len(MANY) and one == two
    assert one == [seg.segment(t) for t in MANY]
    assert all(one[i] for i, t in enumerate(MANY) if t.strip())


def test_pool_workers_are_separate_processes():
    with SegmentPool(Segmenter("morpheme", backend="mecab"), 2) as pool:
        assert len(set(pool.pids)) == 2
        assert pool.map(REVIEWS[:5], progress=False, chunksize=1) == \
            [Segmenter("morpheme", backend="mecab").segment(t) for t in REVIEWS[:5]]


def test_pool_stops_at_once_when_an_exception_leaves_it():
    with pytest.raises(KeyboardInterrupt):
        with SegmentPool(Segmenter("morpheme", backend="mecab"), 2) as pool:
            # chunks of several seconds each: close() would wait for the running and queued ones
            for _ in range(6):
                pool._executor.submit(segment_pool._segment_chunk, REVIEWS * 5000)
            time.sleep(0.3)
            started = time.monotonic()
            raise KeyboardInterrupt
    assert time.monotonic() - started < 2.5
    for pid in pool.pids:
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
    pool.close()  # twice is harmless


# --- serialization and errors -----------------------------------------------------------

@pytest.mark.parametrize("seg", [
    Segmenter("word"), Segmenter("char"), Segmenter("char", jamo=True),
    Segmenter("morpheme", backend="mecab", pos_filter=("NN", "VA"), stopwords=("영화",), with_tags=True),
    Segmenter("morpheme", backend="okt", backend_options=(("stem", True),)),
    Segmenter("morpheme", backend="kiwi"),
], ids=lambda s: s.name())
def test_to_dict_from_dict_round_trip(seg):
    d = json.loads(json.dumps(seg.to_dict()))
    back = Segmenter.from_dict(d)
    assert back == seg and hash(back) == hash(seg) and back.to_dict() == d
    if seg.kind == "morpheme":
        assert d["backend_version"] == morph.BACKENDS[seg.backend].version()


def test_default_backend_comes_from_params():
    from pipeline import params
    assert Segmenter("morpheme").backend == params.TOKENIZE["backend"]


def test_version_mismatch_warns():
    d = Segmenter("morpheme", backend="mecab").to_dict()
    d["backend_version"] = "0.0.1"
    installed = re.escape(morph.BACKENDS["mecab"].version())
    with pytest.warns(UserWarning, match=rf"0\.0\.1.*{installed}"):
        Segmenter.from_dict(d)


@pytest.mark.parametrize("name", [n for n, b in morph.BACKENDS.items() if b.version_modules])
def test_module_versions_agree_with_the_installed_distributions(name, monkeypatch):
    # version() reads __version__ (fast) where declared; it must say what importlib.metadata says
    backend = morph.BACKENDS[name]
    fast = backend.version()
    monkeypatch.setattr(backend, "version_modules", ())
    assert fast == backend.version()


def test_unknown_backend_and_option():
    with pytest.raises(PipelineError, match="unknown morpheme backend 'nope'.*mecab"):
        Segmenter("morpheme", backend="nope")
    with pytest.raises(PipelineError, match="unknown morpheme backend"):
        Segmenter.from_dict({"kind": "morpheme", "backend": "nope"})
    with pytest.raises(PipelineError, match="unknown morpheme backend"):
        morph.load_backend("nope")
    with pytest.raises(PipelineError, match="unknown option.*stemm.*accepted: norm"):
        Segmenter("morpheme", backend="okt", backend_options={"stemm": True})
    # CLI-style string values are converted
    assert dict(Segmenter("morpheme", backend="okt", backend_options={"stem": "true", "max_chunk": "80"})
                .backend_options) == {"max_chunk": 80, "norm": False, "stem": True}


def test_missing_package_gives_install_hint(monkeypatch):
    monkeypatch.setitem(sys.modules, "kiwipiepy", None)  # makes `import kiwipiepy` raise ImportError
    monkeypatch.setattr(morph, "_CACHE", {})
    with pytest.raises(PipelineError, match="pip install kiwipiepy"):
        morph.load_backend("kiwi")
    with pytest.raises(PipelineError, match="pip install kiwipiepy"):
        Segmenter("morpheme", backend="kiwi").segment("영화")
    with pytest.raises(PipelineError, match="pip install kiwipiepy"):
        Segmenter.from_dict({"kind": "morpheme", "backend": "kiwi"})


def test_okt_without_java_says_how_to_install_one(monkeypatch):
    import jpype

    def no_jvm():
        raise jpype.JVMNotFoundException("No JVM shared library file (libjvm.so) found.")
    monkeypatch.setattr(jpype, "isJVMStarted", lambda: False)
    monkeypatch.setattr(jpype, "getDefaultJVMPath", no_jvm)
    monkeypatch.setattr(morph, "_CACHE", {})
    with pytest.raises(PipelineError, match="JDK >= 9.*apt-get install default-jdk-headless"):
        morph.load_backend("okt")


def test_importing_does_not_load_any_analyzer():
    code = ("import sys, pipeline.text.morph, pipeline.text.segment, pipeline.stages.tokenize\n"
            "print(sorted(m for m in ('konlpy', 'jpype', 'mecab', '_mecab', 'kiwipiepy') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# --- the tokenize stage -------------------------------------------------------------------

@pytest.fixture
def data_dir(tmp_path):
    texts = [t.strip() for t in REVIEWS]
    table = pd.DataFrame({
        "id": pd.Series([f"d{i}" for i in range(len(texts))], dtype="string"),
        "text": pd.Series(texts, dtype="string"),
        "label": pd.Series([i % 2 for i in range(len(texts))], dtype="int8"),
        "rating": pd.Series([pd.NA] * len(texts), dtype="Int8"),
        "source": pd.Series(["train"] * 15 + ["test"] * (len(texts) - 15), dtype="string"),
    })
    path = tmp_path / "interim" / "tiny" / "dedupe.parquet"
    path.parent.mkdir(parents=True)
    table.to_parquet(path, index=False)
    adopt_outputs("dedupe", "tiny", path.parent, ["dedupe.parquet"])
    return tmp_path


def test_tokenize_stage(data_dir):
    seg = Segmenter("morpheme", backend="mecab")
    lines: list[str] = []
    result = tokenize("tiny", seg, data_dir=data_dir, workers=1, echo=lines.append)
    out = data_dir / "processed" / "tiny" / "morpheme-mecab"
    assert not result.skipped
    tokens = pd.read_parquet(out / "tokens.parquet")
    source = pd.read_parquet(data_dir / "interim" / "tiny" / "dedupe.parquet")
    assert list(tokens.columns) == ["id", "tokens"] and tokens["id"].tolist() == source["id"].tolist()
    assert [list(t) for t in tokens["tokens"]] == [seg.segment(t) for t in source["text"]]
    assert read_json(out / "segmenter.json") == seg.to_dict()
    assert Segmenter.from_dict(read_json(out / "segmenter.json")) == seg
    assert result.counts["docs"] == len(REVIEWS) and result.counts["empty_docs"] == 2
    assert result.counts["tokens"] == sum(len(t) for t in tokens["tokens"])
    assert lines[-1].startswith(f"tokenize tiny/morpheme-mecab: {len(REVIEWS)} docs -> ")
    manifest = read_json(out / "tokenize.manifest.json")
    assert manifest["params"]["backend"] == "mecab" and "workers" not in manifest["params"]

    again = tokenize("tiny", seg, data_dir=data_dir, workers=2, echo=lines.append)
    assert again.skipped and "up to date" in lines[-1]
    forced = tokenize("tiny", seg, data_dir=data_dir, force=True, echo=lines.append)
    assert not forced.skipped
    changed = tokenize("tiny", Segmenter("morpheme", backend="mecab", pos_filter=("NN",)),
                       data_dir=data_dir, echo=lines.append)
    assert not changed.skipped


def test_tokenize_stage_word_and_jamo_dirs(data_dir):
    tokenize("tiny", Segmenter("word"), data_dir=data_dir, echo=lambda _: None)
    tokenize("tiny", Segmenter("char", jamo=True), data_dir=data_dir, echo=lambda _: None)
    words = pd.read_parquet(data_dir / "processed" / "tiny" / "word" / "tokens.parquet")
    jamo = pd.read_parquet(data_dir / "processed" / "tiny" / "char-jamo" / "tokens.parquet")
    assert list(words["tokens"][0]) == ["영화가", "정말", "재밌었어요"]
    assert list(jamo["tokens"][0])[:5] == ["ㅇ", "ㅕ", "ㅇ", "ㅎ", "ㅘ"]


def test_tokenize_stage_missing_input(tmp_path):
    with pytest.raises(MissingInputError, match="dedupe.parquet"):
        tokenize("tiny", Segmenter("word"), data_dir=tmp_path, echo=lambda _: None)
