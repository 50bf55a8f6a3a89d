"""The synthetic scale corpus (tests/benchmarks/scale_corpus.py): NSMC's format, any size, deterministic."""
from __future__ import annotations

from pipeline.corpora import CORPORA
from pipeline.corpora.readers import read_file
from tests.benchmarks import scale_corpus
from tests.helpers import synthetic_reviews, write_nsmc_file


def test_scale_corpus_is_valid_nsmc_deterministic_and_label_consistent(tmp_path, monkeypatch):
    source = write_nsmc_file(tmp_path / "train.txt", synthetic_reviews(200, seed=3) + [("", 1)],
                             extra_lines=("bad line",))
    monkeypatch.setattr(scale_corpus, "BLOCK", 700)                # several blocks
    out = tmp_path / "scale" / "ratings_train.txt"
    scale_corpus.generate(source, 2500, 0, out)
    lines = out.read_text(encoding="utf-8").splitlines()
    assert lines[0] == "id\tdocument\tlabel" and len(lines) == 2501
    table, problems = read_file(out, CORPORA["nsmc"], "train")
    assert not problems and len(table) == 2500                     # no malformed row
    rows = list(zip(table["id"], table["text"], table["label"], strict=True))
    assert [row[0] for row in rows] == [str(i) for i in range(1, 2501)]
    labels = [row[2] for row in rows]
    assert 0.4 < sum(labels) / len(labels) < 0.6
    # a synthetic review is made of fragments of source reviews with its own label
    by_label = {0: set(), 1: set()}
    for text, label in synthetic_reviews(200, seed=3):
        by_label[label].update(text.split())
    for _, text, label in rows[:200]:
        assert set(text.split()) <= by_label[label]
    first = out.read_bytes()
    scale_corpus.generate(source, 2500, 0, out)
    assert out.read_bytes() == first                               # same seed, same bytes
    scale_corpus.generate(source, 2500, 1, out)
    assert out.read_bytes() != first
    assert [p.name for p in out.parent.iterdir()] == ["ratings_train.txt"]     # no temp file left
