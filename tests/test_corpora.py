"""Corpus readers: exact row counts with quotes, tabs, empty documents and malformed rows."""
from __future__ import annotations

from pipeline.corpora import CORPORA, git_blob_sha1, unquote_csv_field, verify_file
from pipeline.corpora.readers import read_corpus
from tests.helpers import SHARED_CORPORA, write_nsmc_file


def test_nsmc_reader_keeps_every_row_and_unquotes(tmp_path):
    raw = tmp_path / "nsmc"
    write_nsmc_file(raw / "ratings_train.txt", [("아 더빙.. 진짜 짜증나네요", 0), ("", 1), ("NaN", 1), ("null", 0)],
                    extra_lines=('10122280\t"""영화 끝 """"ㅈ같다."""""""\t1',    # quoted twice upstream
                                 '77\t"한쪽 따옴표만 있는 리뷰\t0',                 # a stray quote must not merge rows
                                 '78\t다음 줄\t1'))
    write_nsmc_file(raw / "ratings_test.txt", [("좋아요", 1)])
    table, problems = read_corpus(CORPORA["nsmc"], raw)
    assert not problems
    assert len(table) == 8
    assert table["source"].tolist() == ["train"] * 7 + ["test"]
    texts = table["text"].tolist()
    assert texts[1:4] == ["", "NaN", "null"]          # empty and NA-looking documents stay text
    assert texts[4] == '영화 끝 "ㅈ같다."'
    assert texts[5] == '"한쪽 따옴표만 있는 리뷰' and texts[6] == "다음 줄"
    assert table["label"].tolist() == [0, 1, 1, 0, 1, 0, 1, 1]


def test_nsmc_reader_counts_malformed_rows_by_reason(tmp_path):
    raw = tmp_path / "nsmc"
    write_nsmc_file(raw / "ratings_train.txt", [("좋다", 1)],
                    extra_lines=("1\t탭이\t들어간\t리뷰\t1", "2\t라벨없음", "3\t나쁜 라벨\t5", "4\t숫자아님\tx",
                                 "\t아이디없음\t1"))
    write_nsmc_file(raw / "ratings_test.txt", [])
    table, problems = read_corpus(CORPORA["nsmc"], raw)
    assert len(table) == 1
    assert problems == {"wrong field count": 2, "unmapped label": 2, "missing id": 1}


def test_unquote_csv_field():
    assert unquote_csv_field('"a ""b"" c"') == 'a "b" c'
    assert unquote_csv_field('"""x"""', layers=2) == "x"
    assert unquote_csv_field('"""""""x"""""""', layers=2) == '"x"'   # a review that really is quoted
    assert unquote_csv_field('"not "closed') == '"not "closed'
    assert unquote_csv_field("plain") == "plain"


def test_shopping_reader_on_the_shared_preview(tmp_path):
    preview = (SHARED_CORPORA / "naver_shopping" / "preview_head10.txt").read_text(encoding="utf-8")
    raw = tmp_path / "shop"
    raw.mkdir()
    (raw / "naver_shopping.txt").write_text(preview + "9\t범위 밖\n\t빈 평점\n", encoding="utf-8")
    table, problems = read_corpus(CORPORA["naver_shopping"], raw)
    assert len(table) == 10
    assert table["rating"].tolist()[:5] == [5, 2, 5, 2, 5]
    assert table["label"].tolist()[:5] == [1, 0, 1, 0, 1]
    assert table["text"][0] == "배공빠르고 굿"
    assert set(table["source"]) == {"all"} and table["id"].tolist()[:2] == ["1", "2"]
    assert problems == {"rating out of range": 1, "non-numeric rating": 1}


def test_git_blob_id_matches_git(tmp_path):
    path = tmp_path / "f.txt"
    path.write_bytes(b"hello\n")
    # `git hash-object` of "hello\n"
    assert git_blob_sha1(path) == "ce013625030ba8dba906f756967f9e9ca394464a"


def test_real_nsmc_files_verify_and_read_in_full():
    table, problems = read_corpus(CORPORA["nsmc"], SHARED_CORPORA / "nsmc")
    assert not problems
    assert table["source"].value_counts().to_dict() == {"train": 150_000, "test": 50_000}
    assert (table["text"] == "").sum() == 8
    # 856 documents were CSV-quoted twice; after unquoting, only the 31 reviews that
    # were themselves wrapped in quotes still read as a quoted field
    assert sum(unquote_csv_field(text) != text for text in table["text"]) == 31
    for spec in CORPORA["nsmc"].files:
        assert verify_file(SHARED_CORPORA / "nsmc" / spec.name, spec)[0]
