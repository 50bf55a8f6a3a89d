"""Corpus declarations (pipeline.corpora): every format through the data stages, rating rules, bad input
through the real CLI, and the built-in NSMC / shopping declarations against the old line readers."""
from __future__ import annotations

import csv
import gzip
import json
import os
import random
from collections import Counter
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline import corpora
from pipeline.core.files import read_json, sha256_file
from pipeline.corpora.readers import file_parts, quoted_blocks, read_file, read_part
from pipeline.errors import PipelineError
from pipeline.stages import clean as clean_stage
from pipeline.stages.clean import clean
from pipeline.stages.dedupe import dedupe
from pipeline.stages.download import download
from pipeline.stages.split import split
from tests.helpers import SHARED_CORPORA, ksent, synthetic_reviews

QUIET = {"echo": lambda line: None}


def tricky_rows(n: int = 300, seed: int = 11) -> list[dict]:
    """Reviews with commas, quotes and newlines inside, a star rating 1-5 (3s too) and an id."""
    rng = random.Random(seed)
    rows = []
    for i, (text, label) in enumerate(synthetic_reviews(n, seed)):
        extra = rng.choice(["", ", 그리고 배송도", ' "강추" 합니다', "\n두 번째 줄", ',"따옴표,쉼표"\n끝'])
        stars = rng.choice((4, 5)) if label else rng.choice((1, 2))
        if i % 25 == 0:
            stars = 3                                       # neutral: dropped and counted
        rows.append({"review_id": f"r{i:04d}", "body": text + extra, "stars": stars})
    return rows


DECLARATION = """
description = "fixture: {kind}"
text = "body"
id = "review_id"

[format]
{format}

[rating]
column = "stars"
min = 1
max = 5
positive_from = 4
negative_to = 2

[split]
test_ratio = 0.2
val_ratio = 0.1

[[files]]
path = "{path}"
"""


def write_table(rows: list[dict], folder: Path, kind: str) -> tuple[Path, str]:
    """`rows` written as a file of format `kind`, and the declaration's [format] lines."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind in ("csv", "csv.gz"):
        path = folder / f"reviews.{kind}"
        opener = gzip.open if kind.endswith(".gz") else open
        with opener(path, "wt", encoding="utf-8", newline="") as fh:
            writer = csv.DictWriter(fh, ["review_id", "body", "stars"])
            writer.writeheader()
            writer.writerows(rows)
        return path, 'type = "csv"'
    if kind == "tsv":                   # TSV holds no tab or newline: those rows are written with spaces
        path = folder / "reviews.tsv"
        lines = ["review_id\tbody\tstars"] + [f"{r['review_id']}\t{' '.join(r['body'].split())}\t{r['stars']}"
                                               for r in rows]
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
        return path, 'type = "tsv"'
    if kind == "jsonl":
        path = folder / "reviews.jsonl"
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
        return path, 'type = "jsonl"'
    path = folder / "reviews.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path, row_group_size=64)
    return path, 'type = "parquet"'


def declare(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def declared(tmp_path, monkeypatch):
    """Declares corpora in tmp_path/decl (read through $KSENT_CORPORA); returns a function kind -> name."""
    monkeypatch.setenv("KSENT_CORPORA", str(tmp_path / "decl"))
    corpora.reload()
    yield lambda kind, rows: _declare_kind(tmp_path, kind, rows)
    corpora.reload()


def _declare_kind(tmp_path: Path, kind: str, rows: list[dict]) -> str:
    name = "fx_" + kind.replace(".", "_")
    path, fmt = write_table(rows, tmp_path / "files" / name, kind)
    declare(tmp_path / "decl", name, DECLARATION.format(kind=kind, format=fmt, path=path.as_posix()))
    corpora.reload()
    return name


def run_data_stages(name: str, data: Path, **engine) -> dict:
    download(name, data_dir=data, progress=False, **QUIET)
    result = clean(name, data_dir=data, **engine, **QUIET)
    dedupe(name, data_dir=data, **engine, **QUIET)
    split(name, data_dir=data, **QUIET)
    return result.counts


def test_every_format_gives_the_same_table_through_the_data_stages(declared, tmp_path, monkeypatch):
    rows = tricky_rows()
    tables = {}
    for kind in ("csv", "csv.gz", "jsonl", "parquet"):
        name = declared(kind, rows)
        counts = run_data_stages(name, tmp_path / "data")
        assert counts["malformed"] == {"neutral rating": 12}, (kind, counts)
        folder = tmp_path / "data" / "interim" / name
        tables[kind] = {f: pq.read_table(folder / f).to_pandas() for f in ("clean.parquet", "split.parquet")}
    for kind, got in tables.items():
        for f, table in got.items():
            pd.testing.assert_frame_equal(table, tables["csv"][f], obj=f"{kind} {f}")
    split_table = tables["csv"]["split.parquet"]
    shares = {k: n / len(split_table) for k, n in Counter(split_table["split"]).items()}
    assert abs(shares["test"] - 0.2) < 0.01 and abs(shares["val"] - 0.1) < 0.01       # the declaration's ratios
    texts = dict(zip(split_table["id"], split_table["raw"], strict=True))
    assert any("\n" in t and "," in t and '"' in t for t in texts.values())     # quotes, commas, newlines kept
    bodies = {r["body"] for r in rows if r["stars"] != 3}
    assert set(texts.values()) <= bodies and len(texts) >= len(bodies) - 3     # dedupe: one per text, conflicts

    tsv = declared("tsv", rows)                     # TSV: the same rows, newlines written as spaces
    run_data_stages(tsv, tmp_path / "data")
    got = pq.read_table(tmp_path / "data" / "interim" / tsv / "split.parquet").to_pandas()
    assert got["id"].tolist() == split_table["id"].tolist()
    assert got["split"].tolist() == split_table["split"].tolist()


@pytest.mark.parametrize("kind", ["csv", "csv.gz", "tsv", "jsonl", "parquet"])
def test_every_format_through_tokenize_and_pad_on_two_workers_is_byte_identical_to_one_process(
        kind, declared, tmp_path, monkeypatch):
    from pipeline.stages.pad import pad
    from pipeline.stages.tokenize import tokenize
    from pipeline.text.segment import Segmenter

    pytest.importorskip("mecab", reason="python-mecab-ko is not installed")
    name = declared(kind, tricky_rows(600, seed=3))
    mecab = Segmenter("morpheme", backend="mecab")
    outputs = []
    for label, block, engine in (("one", 1 << 30, {"workers": 1}), ("cluster", 2000, {"workers": 2})):
        monkeypatch.setattr(clean_stage, "BLOCK_BYTES", block)
        monkeypatch.setattr(clean_stage, "LOCAL_BELOW", 2)
        data = tmp_path / label
        counts = run_data_stages(name, data, **engine)
        tokenize(name, mecab, data_dir=data, **engine, **QUIET)
        pad(name, mecab.name(), data_dir=data, pretrained_words=0, **engine, **QUIET)
        processed = data / "processed" / name / mecab.name()
        outputs.append((counts["partitions"], counts["engine"],
                        *[(data / "interim" / name / f).read_bytes() for f in ("clean.parquet", "split.parquet")],
                        *[(processed / f).read_bytes() for f in ("tokens.parquet", "train.parquet", "test.parquet",
                                                                 "tokenizer.json")]))
    (one_parts, _, *one), (parts, where, *cluster) = outputs
    assert cluster == one
    assert one_parts == (10 if kind == "parquet" else 1)      # Parquet: one partition per row group (64 rows)
    assert parts >= 5 and "2 Dask workers" in where, (parts, where)     # a gzip file too: clean unpacks it first


def test_quoted_blocks_end_at_row_ends_only(tmp_path):
    rows = tricky_rows(400, seed=5)
    path, _ = write_table(rows, tmp_path, "csv")
    text = path.read_bytes()
    for block in (1, 50, 333, 4096):
        blocks = quoted_blocks(path, block)
        assert blocks[0][0] == 0 and blocks[-1][1] == len(text)
        assert all(a[1] == b[0] for a, b in zip(blocks, blocks[1:], strict=False))
        for start, end, first_line in blocks:
            chunk = text[start:end].decode()
            assert chunk.count('"') % 2 == 0 and chunk.endswith("\n")
            assert first_line == text[:start].count(b"\n") + 1


def test_ids_default_to_the_line_a_row_starts_on(declared, tmp_path):
    rows = [{"review_id": "x", "body": "첫 줄\n둘째 줄", "stars": 5}, {"review_id": "y", "body": "좋아요", "stars": 1}]
    path, _ = write_table(rows, tmp_path / "f", "csv")
    declare(tmp_path / "decl", "noid", DECLARATION.format(kind="csv", format='type = "csv"', path=path.as_posix())
            .replace('id = "review_id"\n', ""))
    corpora.reload()
    spec = corpora.get_corpus("noid")
    table, problems = read_file(path, spec, "all")
    assert table["id"].tolist() == ["2", "4"] and not problems          # header line 1; row 1 spans lines 2-3


def test_label_columns_map_their_values_and_count_the_rest(tmp_path, declared):
    rows = [{"id": i, "text": f"리뷰 {i}", "sentiment": value}
            for i, value in enumerate(["positive", "negative", "Positive", "neutral", "", "negative"])]
    path = tmp_path / "labels.jsonl"
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows) + "not json\n[1, 2]\n"
                    + '{"id": 9, "sentiment": "positive"}\n', encoding="utf-8")
    declare(tmp_path / "decl", "labels", f"""
text = "text"
id = "id"
format = {{ type = "jsonl" }}
label = {{ column = "sentiment", positive = ["positive"], negative = ["negative"] }}
[[files]]
path = "{path.as_posix()}"
""")
    corpora.reload()
    table, problems = read_file(path, corpora.get_corpus("labels"), "all")
    assert table["label"].tolist() == [1, 0, 1, 0] and table["id"].tolist() == ["0", "1", "2", "5"]
    assert problems == {"unmapped label": 2, "invalid JSON": 1, "not a JSON object": 1, "missing column": 1}


def test_rating_rules_count_neutral_out_of_range_and_non_numeric_ratings(tmp_path, declared):
    path = tmp_path / "ratings.csv"
    path.write_text("stars,body\n5,좋다\n4.0,괜찮다\n3,보통\n2,별로\n1,최악\n6,이상\n0,이상\nfive,글자\n4.5,반\n,빈칸\n"
                    "1,쉼표,너무 많음\n", encoding="utf-8")
    declare(tmp_path / "decl", "ratings", DECLARATION.format(kind="csv", format='type = "csv"', path=path.as_posix())
            .replace('id = "review_id"\n', ""))
    corpora.reload()
    table, problems = read_file(path, corpora.get_corpus("ratings"), "all")
    assert table["label"].tolist() == [1, 1, 0, 0] and table["rating"].tolist() == [5, 4, 2, 1]
    assert problems == {"neutral rating": 1, "rating out of range": 2, "non-numeric rating": 2,
                        "non-integer rating": 1, "wrong field count": 1}


def test_an_unpinned_local_file_is_followed_as_an_input_and_its_copy_enforced(declared, tmp_path):
    name = declared("csv", tricky_rows(60))
    source = tmp_path / "files" / name / "reviews.csv"
    data = tmp_path / "data"
    download(name, data_dir=data, progress=False, **QUIET)
    recorded = read_json(data / "raw" / name / "checksums.json")
    assert recorded == {"reviews.csv": sha256_file(source)}
    assert download(name, data_dir=data, progress=False, **QUIET).skipped
    source.write_bytes(source.read_bytes() + b"r9999,new,5\n")          # the user exports again
    again = download(name, data_dir=data, progress=False, **QUIET)      # ... and the new export is taken
    assert not again.skipped and "fetched and verified reviews.csv" in again.summary
    assert sha256_file(data / "raw" / name / "reviews.csv") == sha256_file(source)
    assert read_json(data / "raw" / name / "checksums.json") == {"reviews.csv": sha256_file(source)}
    (data / "raw" / name / "reviews.csv").write_bytes(b"edited")         # the downloaded copy is edited
    run = ksent("clean", "--corpus", name, "--data-dir", str(data), env={"KSENT_CORPORA": str(tmp_path / "decl")})
    assert run.returncode == 1 and "recorded at download" in run.stderr.decode()


# --- bad declarations and files, through the real CLI ---------------------------------------------

def cli(tmp_path: Path, *args: str):
    run = ksent(*args, env={"KSENT_CORPORA": str(tmp_path / "decl")})
    return run.returncode, run.stdout.decode(), run.stderr.decode()


def test_bad_declarations_are_one_line_messages_naming_the_key(tmp_path):
    base = DECLARATION.format(kind="csv", format='type = "csv"', path=(tmp_path / "r.csv").as_posix())
    for text, message in (
            (base + "\nlabels = 1\n", "unknown key 'labels'"),
            (base.replace("positive_from = 4", "positive_from = 4\nneutral = 3"), "unknown key 'neutral' in [rating]"),
            (base.replace('type = "csv"', 'type = "xls"'), "format.type: Input should be"),
            (base.replace('text = "body"\n', ""), "missing key 'text'"),
            (base.replace("positive_from = 4", "positive_from = 1"), "need min <= negative_to < positive_from"),
            (base.replace("positive_from = 4", 'positive_from = "4"'), "positive_from must be a number, got the "
                                                                        "string '4'"),
            (base + '\n[label]\ncolumn = "x"\npositive = [1]\nnegative = [0]\n', "either as [label]"),
            ("text = \n", "not valid TOML")):
        declare(tmp_path / "decl", "bad", text)
        code, out, err = cli(tmp_path, "corpus", "show", "bad")
        assert code == 1 and message in err and "bad.toml" in err, (message, err)
        assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    (tmp_path / "decl" / "bad.toml").unlink()

    declare(tmp_path / "decl", "nsmc", base)                           # a second declaration of a built-in name
    code, _, err = cli(tmp_path, "clean", "--corpus", "nsmc")
    assert code == 2 and "two declarations of corpus 'nsmc'" in err and "Traceback" not in err


def test_bad_files_are_one_line_messages_or_counted_problems(tmp_path):
    good = tmp_path / "r.csv"
    good.write_text('review_id,body,stars\nr1,"좋다, 정말",5\nr2,별로,1\nr3,열린 따옴표,2,5\n', encoding="utf-8")
    declare(tmp_path / "decl", "shop", DECLARATION.format(kind="csv", format='type = "csv"', path=good.as_posix()))
    code, out, err = cli(tmp_path, "corpus", "check", "shop", str(good))
    assert "3 rows -> 2 usable (1 positive, 1 negative" in out and "1 wrong field count" in out
    assert code == 1 and "shop.toml: [split] validation share 0.1 of 2 rows gives 1 row(s)" in err   # too few to split
    # a quote that never closes is no counted problem: the file is refused, naming its line
    good.write_text('review_id,body,stars\nr1,"좋다, 정말",5\nr2,별로,1\nr3,"열린 따옴표,2\n', encoding="utf-8")
    code, out, err = cli(tmp_path, "corpus", "check", "shop", str(good))
    assert code == 1 and "r.csv: line 4: a quoted field opens here and does not close before the end" in err

    other = tmp_path / "other.csv"
    other.write_text("id,review,rating\n1,좋다,5\n", encoding="utf-8")
    code, _, err = cli(tmp_path, "corpus", "check", "shop", str(other))
    assert code == 1 and "has no column 'body'" in err and "its columns: id, review, rating" in err

    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    code, _, err = cli(tmp_path, "corpus", "check", "shop", str(empty))
    assert code == 1 and "is empty" in err

    cp949 = tmp_path / "cp949.csv"
    cp949.write_bytes(b"review_id,body,stars\n" + "".join(f"r{i},정말 좋아요,5\n" for i in range(20))
                      .encode("cp949"))
    code, _, err = cli(tmp_path, "corpus", "check", "shop", str(cp949))
    assert code == 1 and "is not UTF-8" in err and "CP949" in err
    for _, _, err in [cli(tmp_path, "corpus", "check", "shop", str(p)) for p in (other, empty, cp949)]:
        assert "Traceback" not in err


def test_corpus_list_and_show(tmp_path):
    (tmp_path / "decl").mkdir()
    code, out, _ = cli(tmp_path, "corpus", "list")
    assert code == 0 and all(name in out for name in ("nsmc", "naver_shopping", "naver_shopping_sample"))
    code, out, _ = cli(tmp_path, "corpus", "show", "naver_shopping_sample", "--json")
    shown = json.loads(out)
    assert shown["label"]["positive"] == ">= 4" and shown["split"] == {"val_ratio": 0.1, "test_ratio": 0.2}
    assert shown["files"][0]["name"] == "train.csv" and shown["unlabeled"]["text column"] == "reviews"


# --- the built-in declarations read as the old line readers did ---------------------------------------

def _old_nsmc_line(line: str):
    """ksent's NSMC line parser before declarations (tab split, quotes undone twice), as the oracle."""
    from pipeline.corpora import unquote_csv_field

    fields = line.split("\t")
    if len(fields) != 3:
        return "wrong field count"
    doc_id, text, label = fields
    if not doc_id:
        return "missing id"
    if label not in ("0", "1"):
        return "bad label"
    return doc_id, unquote_csv_field(text, layers=2), int(label), None


def _old_shopping_line(line: str, lineno: int):
    fields = line.split("\t")
    if len(fields) != 2:
        return "wrong field count"
    rating, text = fields
    if not rating.strip().isdigit() or not 1 <= int(rating) <= 5:
        return "bad rating"
    return str(lineno), text, int(int(rating) > 3), int(rating)


def test_nsmc_and_the_shopping_preview_read_as_the_old_line_readers_did():
    nsmc = corpora.get_corpus("nsmc")
    for f in nsmc.files:
        path = SHARED_CORPORA / "nsmc" / f.name
        lines = path.read_bytes().decode("utf-8").split("\n")[1:-1]
        expected = [row for row in map(_old_nsmc_line, lines) if not isinstance(row, str)]
        table, problems = read_file(path, nsmc, f.source)
        assert not problems and len(table) == len(expected) == len(lines)
        assert list(zip(table["id"], table["text"], table["label"].tolist(), strict=True)) == [
            r[:3] for r in expected]
        assert table["rating"].isna().all() and (table["source"] == f.source).all()

    shop = corpora.get_corpus("naver_shopping")
    preview = SHARED_CORPORA / "naver_shopping" / "preview_head10.txt"
    lines = preview.read_text(encoding="utf-8").splitlines()
    expected = [_old_shopping_line(line, i) for i, line in enumerate(lines, start=1)]
    table, problems = read_file(preview, shop, "all")
    assert not problems
    assert list(zip(table["id"], table["text"], table["label"].tolist(), table["rating"].tolist(),
                    strict=True)) == expected


def test_the_shopping_sample_reads_whole_and_in_partitions_alike():
    spec = corpora.get_corpus("naver_shopping_sample")
    path = SHARED_CORPORA / "naver_shopping_sample" / "train.csv"
    whole, problems = read_file(path, spec, "all")
    assert len(whole) == 19_999 and not problems
    assert whole["label"].sum() == 10_000 and set(whole["rating"]) == {1, 2, 4, 5}
    assert whole["text"].str.contains(",").sum() >= 829 and whole["text"].str.contains('"').sum() >= 9
    parts = file_parts(path, spec, spec.format, 50_000)
    assert len(parts) > 10
    pieces = pd.concat([read_part(path, part, spec, "all")[0] for part in parts], ignore_index=True)
    pd.testing.assert_frame_equal(pieces, whole)


def test_a_declared_csv_corpus_goes_through_ksent_run_and_predict(tmp_path):
    """A user's CSV with a star rating, declared in ./corpora/, through the real CLI: every stage, then predict."""
    rows = tricky_rows(400, seed=21)
    path, fmt = write_table(rows, tmp_path / "exports", "csv")
    declare(tmp_path / "corpora", "my_shop", DECLARATION.format(kind="csv", format=fmt, path="../exports/reviews.csv"))
    env = {"KSENT_CORPORA": ""}
    common = ["--data-dir", str(tmp_path / "data"), "--artifacts-dir", str(tmp_path / "artifacts")]
    run = ksent("run", "--corpus", "my_shop", "--tokenizer", "word", *common, "--epochs", "2", "--units", "8",
                "--embedding-dim", "8", cwd=tmp_path, env=env)
    out = run.stdout.decode()
    assert run.returncode == 0, run.stderr.decode()[-2000:]
    assert "clean my_shop: 400 rows read (all 384) -> 384 rows (16 neutral rating" in out
    assert "evaluate my_shop/word: test accuracy" in out
    run = ksent("predict", "--model", str(tmp_path / "artifacts" / "my_shop-word"), "--json", "정말 재밌어요",
                cwd=tmp_path, env=env)
    assert run.returncode == 0 and json.loads(run.stdout)["text"] == "정말 재밌어요"


def test_the_readme_declaration_example_is_valid():
    import re

    from pipeline.corpora.declaration import parse_declaration

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    example = re.search(r"```toml\n(.*?)```", readme, re.S).group(1)
    spec = parse_declaration("my_shop", example, Path("/srv/corpora/my_shop.toml"))
    assert spec.format.kind == "csv" and spec.label.positive_from == 4 and spec.label.negative_to == 2
    assert spec.files[0].url == "file:///srv/exports/reviews.csv" and not spec.files[0].pinned


# --- the smaller doors (reliability, round 3) ------------------------------------------------------

def test_a_description_with_escape_codes_is_shown_not_run_and_true_is_no_rating(tmp_path):
    base = DECLARATION.format(kind="csv", format='type = "csv"', path=(tmp_path / "r.csv").as_posix())
    declare(tmp_path / "decl", "shown", base.replace('description = "fixture: csv"',
                                                     'description = "\\u001b[31mred\\u001b[0m and\\ttab"'))
    for command in (["corpus", "list"], ["corpus", "show", "shown"]):
        code, out, err = cli(tmp_path, *command)
        assert code == 0 and "\x1b" not in out and "\\x1b[31mred\\x1b[0m and\\ttab" in out, (out, err)
    (tmp_path / "decl" / "shown.toml").unlink()
    declare(tmp_path / "decl", "bad", base.replace("min = 1", "min = true"))
    code, _, err = cli(tmp_path, "corpus", "show", "bad")
    assert code == 1 and "bad.toml: rating: min must be a number, got true" in err, err


def test_a_duplicated_column_a_utf16_file_a_fifo_and_a_private_file(declared, tmp_path):
    name = declared("csv", tricky_rows(30))
    source = tmp_path / "files" / name / "reviews.csv"
    original = source.read_bytes()
    source.write_text("review_id,body,body,stars\nr1,좋아요,또,5\n", encoding="utf-8")
    code, _, err = cli(tmp_path, "corpus", "check", name, str(source))
    assert code == 1 and "header names the column 'body' 2 times" in err, err
    for encoding in ("utf-16", "utf-16-le"):                   # with a byte-order mark, and without
        source.write_bytes(original.decode("utf-8").encode(encoding))
        code, _, err = cli(tmp_path, "corpus", "check", name, str(source))
        assert code == 1 and "looks like UTF-16 - convert it, e.g. `iconv -f UTF-16 -t UTF-8`" in err, err
    source.unlink()
    os.mkfifo(source)                                            # a pipe where the export should be: no hang
    with pytest.raises(Exception, match="is not a regular file"):
        download(name, data_dir=tmp_path / "data", progress=False, **QUIET)
    source.unlink()
    source.write_bytes(original)
    source.chmod(0o600)                                          # readable by its owner only ...
    download(name, data_dir=tmp_path / "data", progress=False, **QUIET)
    assert (tmp_path / "data" / "raw" / name / "reviews.csv").stat().st_mode & 0o077 == 0    # ... and its copy
    clean(name, data_dir=tmp_path / "data", **QUIET)             # ... and the reviews made of it
    interim = tmp_path / "data" / "interim" / name
    assert [p.name for p in interim.iterdir() if p.stat().st_mode & 0o077 and not p.name.endswith(".manifest.json")
            ] == []
    assert (interim / "clean.parquet").is_file()


def test_the_record_of_a_local_export_is_its_source_a_damaged_one_is_written_anew(declared, tmp_path):
    name = declared("csv", tricky_rows(30))
    data = tmp_path / "data"
    download(name, data_dir=data, progress=False, **QUIET)
    record = data / "raw" / name / "checksums.json"
    good = record.read_bytes()
    record.write_text('{"reviews.csv": "nonsense')
    with pytest.raises(PipelineError, match="checksums.json is damaged or unreadable"):
        clean(name, data_dir=data, **QUIET)                      # fails closed ...
    result = download(name, data_dir=data, progress=False, **QUIET)    # ... until download reads the source again
    assert "checksums.json written anew" in result.summary and record.read_bytes() == good
    assert clean(name, data_dir=data, **QUIET).counts["rows_out"] > 0


def test_corpus_check_refuses_a_local_file_of_another_size_than_declared(tmp_path):
    path, fmt = write_table(tricky_rows(20), tmp_path / "files", "csv")
    text = DECLARATION.format(kind="csv", format=fmt, path=path.as_posix())
    declare(tmp_path / "decl", "sized", text + f"size = {path.stat().st_size}\n")
    code, out, err = cli(tmp_path, "corpus", "check", "sized")
    assert code == 0, err
    declare(tmp_path / "decl", "sized", text + f"size = {path.stat().st_size + 1}\n")
    code, _, err = cli(tmp_path, "corpus", "check", "sized")
    assert code == 1 and f"but its declaration says size = {path.stat().st_size + 1:,}" in err, err
    code, _, err = cli(tmp_path, "download", "--corpus", "sized", "--data-dir", str(tmp_path / "data"))
    assert code == 1 and "its declared size says arrived" in err and "retrying" not in err, err   # no wait


def test_control_characters_a_file_holds_are_shown_escaped_in_an_error(declared, tmp_path):
    name = declared("csv", tricky_rows(10))
    source = tmp_path / "files" / name / "reviews.csv"
    source.write_bytes(b"review_id,bo\x1b[31mdy\x07,stars\nr1,x,5\n")
    code, _, err = cli(tmp_path, "corpus", "check", name, str(source))
    assert code == 1 and "bo\\x1b[31mdy\\x07" in err and "\x1b" not in err and "\x07" not in err, err


def test_a_stray_quote_is_refused_naming_its_line_never_a_silent_merge(tmp_path):
    rows = [f"{i},리뷰 {i} 좋아요,5" for i in range(1, 3000)]
    rows[1] = '99999,"broken quote here,5'                       # line 3 of the file (after the header)
    path = tmp_path / "reviews.csv"
    path.write_text("id,reviews,target\n" + "\n".join(rows) + "\n", encoding="utf-8")
    declare(tmp_path / "decl", "rtshop", SHOP.replace("{path}", path.as_posix()))
    code, out, err = cli(tmp_path, "corpus", "check", "rtshop", str(path))
    assert code == 1 and "reviews.csv: line 3: a quoted field opens here and does not close before the end of the " \
                         "file" in err and "Traceback" not in err, (out, err)
    code, _, err = cli(tmp_path, "run", "--corpus", "rtshop", "--tokenizer", "word", "--data-dir", str(tmp_path / "d"),
                       "--artifacts-dir", str(tmp_path / "a"))
    assert code == 1 and "line 3: a quoted field opens here" in err, err
    # closed again far below: still refused, naming where it opened
    rows[2000] = '2001,"리뷰 2001,5'
    path.write_text("id,reviews,target\n" + "\n".join(rows) + "\n", encoding="utf-8")
    code, _, err = cli(tmp_path, "corpus", "check", "rtshop", str(path))
    assert code == 1 and "line 3: a quoted field opens here and does not close within 500 lines" in err, err


SHOP = """text = "reviews"
id = "id"
format = { type = "csv" }
rating = { column = "target", min = 1, max = 5, positive_from = 4, negative_to = 2 }
[[files]]
path = "{path}"
"""


def test_a_declaration_found_twice_by_the_same_path_is_read_once(tmp_path, monkeypatch):
    from pipeline.corpora.declaration import discover

    base = DECLARATION.format(kind="csv", format='type = "csv"', path=(tmp_path / "r.csv").as_posix())
    declare(tmp_path / "corpora", "mine", base)
    monkeypatch.chdir(tmp_path)                                     # ./corpora/ ...
    monkeypatch.setenv("KSENT_CORPORA", str(tmp_path / "corpora"))  # ... and the same folder by its full path
    assert "mine" in discover()


def test_a_gzip_bomb_is_refused_by_name_before_memory_holds_it(declared, tmp_path, monkeypatch):
    import tracemalloc

    from pipeline.corpora import readers

    monkeypatch.setattr(readers, "MIN_UNPACK_LIMIT", 1 << 20)         # a small limit, so the fixture stays small
    name = declared("csv.gz", tricky_rows(50))
    bomb = tmp_path / "files" / name / "reviews.csv.gz"
    with gzip.open(bomb, "wb") as fh:                                 # 64 MB of one review, ~64 kB packed
        fh.write(b"review_id,body,stars\n")
        fh.write(b"r1," + b"x" * (64 << 20) + b",5\n")
    tracemalloc.start()
    try:
        with pytest.raises(PipelineError, match=r"reviews.csv.gz unpacks to more than [\d,]+ bytes \(30 times its "
                                                r"[\d,]+\): refused as a likely gzip bomb"):
            read_file(bomb, corpora.CORPORA[name], "all")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 16 << 20                                            # refused long before 64 MB were held


def test_a_gzip_file_is_read_as_it_is_decompressed(declared, tmp_path, monkeypatch):
    import tracemalloc

    from pipeline.corpora import check as check_module
    from pipeline.corpora.check import check_file

    monkeypatch.setattr(check_module, "CHUNK_ROWS", 1000)
    name = declared("csv.gz", tricky_rows(50))
    path = tmp_path / "files" / name / "reviews.csv.gz"
    rows = 20_000
    with gzip.open(path, "wt", encoding="utf-8", newline="") as fh:   # ~30 MB unpacked
        fh.write("review_id,body,stars\n")
        for i in range(rows):
            fh.write(f"r{i},\"{'정말 좋아요 ' * 80}{i}\",{5 if i % 2 else 1}\n")
    tracemalloc.start()
    try:
        report = check_file(corpora.CORPORA[name], path, "all")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert report["rows"] == rows and report["positive"] == report["negative"] == rows // 2
    assert peak < 10 << 20, peak                        # a fraction of the 30 MB it unpacks to


def test_cr_only_lines_a_device_and_a_damaged_parquet_are_one_line_messages(declared, tmp_path):
    name = declared("csv", tricky_rows(20))
    source = tmp_path / "files" / name / "reviews.csv"
    source.write_bytes(b"review_id,body,stars\rr1,good,5\rr2,bad,1\r")              # old Mac line endings
    code, _, err = cli(tmp_path, "corpus", "check", name, str(source))
    assert code == 1 and "the header row cannot be read as CSV" in err and "tr '\\r' '\\n'" in err, err
    code, _, err = cli(tmp_path, "corpus", "check", name, "/dev/zero")
    assert code == 1 and "/dev/zero is not a regular file" in err, err
    parquet = declared("parquet", tricky_rows(40))
    path = tmp_path / "files" / parquet / "reviews.parquet"
    data = bytearray(path.read_bytes())
    data[len(data) // 3: len(data) // 3 + 64] = b"\xff" * 64                        # a damaged data page
    path.write_bytes(bytes(data))
    code, _, err = cli(tmp_path, "corpus", "check", parquet, str(path))
    assert code == 1 and "reviews.parquet" in err and "Traceback" not in err and "unexpected error" not in err, err
