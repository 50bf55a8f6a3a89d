"""Pretrained token vectors: pipeline.model.embeddings, the pretrain stage, and their use by pad and train."""
from __future__ import annotations

import dataclasses
import gzip
import random

import numpy as np
import pandas as pd
import pytest

from pipeline import corpora
from pipeline.core.files import read_json, sha256_file
from pipeline.errors import ParameterError, PipelineError
from pipeline.model.embeddings import embedding_matrix, learn_vectors
from pipeline.stages.clean import clean
from pipeline.stages.dedupe import dedupe
from pipeline.stages.download import download
from pipeline.stages.pad import pad
from pipeline.stages.pretrain import pretrain
from pipeline.stages.split import split
from pipeline.stages.tokenize import tokenize
from pipeline.stages.train import train
from pipeline.text.segment import Segmenter
from tests.helpers import FILLER, SMALL, write_processed

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

NEW_WORD = "꿀잼보장"          # occurs only in the unlabeled fixture text


def _cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _sentences(n=3000, seed=0):
    """Tokens a and b share their contexts (c0-c3), token z has others (d0-d3)."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        word, context = rng.choice([("a", "c"), ("b", "c"), ("z", "d")])
        rows.append([f"{context}{rng.randrange(4)}", f"{context}{rng.randrange(4)}", word,
                     f"{context}{rng.randrange(4)}", f"{context}{rng.randrange(4)}"])
    return rows


def test_learn_vectors_follow_shared_contexts_and_are_reproducible():
    tokens, vectors = learn_vectors(_sentences(), dim=16, seed=1)
    assert vectors.shape == (len(tokens), 16) and vectors.dtype == np.float32 and set(tokens) >= {"a", "b", "z"}
    v = dict(zip(tokens, vectors, strict=True))
    assert _cos(v["a"], v["b"]) > _cos(v["a"], v["z"]) + 0.3
    again = learn_vectors(_sentences(), dim=16, seed=1)                   # one worker thread: same vectors
    assert again[0] == tokens and np.array_equal(again[1], vectors)
    assert not np.array_equal(learn_vectors(_sentences(), dim=16, seed=2)[1], vectors)
    fasttext_tokens, fasttext_vectors = learn_vectors(_sentences(500), method="fasttext", dim=8, seed=1)
    assert fasttext_vectors.shape == (len(fasttext_tokens), 8) and np.isfinite(fasttext_vectors).all()


def test_learn_vectors_of_no_tokens_and_unknown_method():
    tokens, vectors = learn_vectors([[], []], dim=4)
    assert tokens == [] and vectors.shape == (0, 4)
    assert learn_vectors([["rare"]], dim=4, min_count=2)[0] == []      # below min_count: nothing to learn
    with pytest.raises(PipelineError, match="method must be one of"):
        learn_vectors([["a"]], method="glove")


def test_embedding_matrix_lines_up_with_the_vocabulary():
    vectors = np.arange(12, dtype=np.float32).reshape(3, 4)
    matrix, found = embedding_matrix(["y", "missing", "x"], ["x", "y", "unused"], vectors, reserved=2, seed=0)
    assert matrix.shape == (5, 4) and found == 2
    np.testing.assert_array_equal(matrix[2], vectors[1])                 # "y"
    np.testing.assert_array_equal(matrix[4], vectors[0])                 # "x"
    assert np.isfinite(matrix).all() and not np.array_equal(matrix[3], vectors[2])
    again, _ = embedding_matrix(["y", "missing", "x"], ["x", "y", "unused"], vectors, reserved=2, seed=0)
    np.testing.assert_array_equal(again, matrix)


# --- the pretrain stage on the fixture corpus --------------------------------------------------

@pytest.fixture
def tokenized(tiny_corpus, tmp_path):
    """The fixture corpus through tokenize (word), plus texts of its held-out rows: (data_dir, heldout texts)."""
    data = tmp_path / "data"
    quiet = {"data_dir": data, "echo": lambda _: None}
    download("tiny", mirror=str(tiny_corpus), progress=False, **quiet)
    for stage in (clean, dedupe, split):
        stage("tiny", **quiet)
    tokenize("tiny", Segmenter("word"), **quiet)
    rows = pd.read_parquet(data / "interim" / "tiny" / "split.parquet")
    return data, rows.loc[rows["split"] != "train", "raw"].tolist()


def write_unlabeled(path, heldout: list[str], n=400, seed=3):
    """Reviews with NEW_WORD in the contexts of positive phrases, 5 held-out texts, an empty line, bad bytes."""
    rng = random.Random(seed)
    lines = [f"{NEW_WORD} {rng.choice(FILLER)} {rng.choice(['최고의', '정말', '강력'])}".encode() for _ in range(n)]
    lines += [text.encode() for text in heldout[:5]] + [b"", b"\xff\xfe broken"]
    path.parent.mkdir(parents=True, exist_ok=True)
    with gzip.GzipFile(path, "wb", mtime=0) as fh:
        fh.write(b"\n".join(lines) + b"\n")
    return path


def test_pretrain_learns_from_train_and_unlabeled_text_but_never_from_heldout_texts(tokenized, tmp_path):
    data, heldout = tokenized
    unlabeled = write_unlabeled(tmp_path / "unlabeled.txt.gz", heldout)
    lines: list[str] = []
    result = pretrain("tiny", "word", data_dir=data, unlabeled=unlabeled, dim=8, echo=lines.append)
    counts = result.counts
    assert counts["unlabeled_lines"] == 407 and counts["invalid_utf8"] == 1 and counts["empty"] == 1
    assert counts["heldout_text"] == len(set(heldout[:5])) and counts["unlabeled_used"] == 400
    folder = data / "processed" / "tiny" / "word"
    with np.load(folder / "vectors.npz") as npz:
        tokens, vectors = npz["tokens"].tolist(), npz["vectors"]
        train_counts, unlabeled_counts = npz["train_counts"], npz["unlabeled_counts"]
    i = tokens.index(NEW_WORD)
    assert unlabeled_counts[i] == 400 and train_counts[i] == 0 and vectors.shape == (len(tokens), 8)
    assert counts["unlabeled_only_tokens"] >= 1 and "unlabeled" in lines[-1]
    manifest = read_json(folder / "pretrain.manifest.json")
    assert manifest["inputs"]["unlabeled"] == sha256_file(unlabeled)    # recorded by checksum

    # same inputs and parameters: the same vectors, byte for byte
    first = sha256_file(folder / "vectors.npz")
    pretrain("tiny", "word", data_dir=data, unlabeled=unlabeled, dim=8, force=True, echo=lambda _: None)
    assert sha256_file(folder / "vectors.npz") == first

    # pad puts the unlabeled-only token after every train token; without pretrained_words it stays OOV
    pad("tiny", "word", data_dir=data, echo=lambda _: None)
    vocabulary = read_json(folder / "tokenizer.json")["vocabulary"]["tokens"]
    assert NEW_WORD in vocabulary and counts["tokens"] >= len(vocabulary)
    assert vocabulary.index(NEW_WORD) >= len([t for t, n in zip(tokens, train_counts, strict=True) if n >= 2])
    assert read_json(folder / "vocab_report.json")["pretrained_words"] >= 1
    pad("tiny", "word", data_dir=data, pretrained_words=0, echo=lambda _: None)
    assert NEW_WORD not in read_json(folder / "tokenizer.json")["vocabulary"]["tokens"]


def test_pretrain_without_unlabeled_text_and_on_bad_files(tokenized, tmp_path):
    data, heldout = tokenized
    result = pretrain("tiny", "word", data_dir=data, dim=8, echo=lambda _: None)     # auto: tiny has none
    assert result.counts["unlabeled_lines"] == 0 and result.counts["unlabeled_only_tokens"] == 0
    vectors = data / "processed" / "tiny" / "word" / "vectors.npz"
    before = sha256_file(vectors)

    truncated = tmp_path / "truncated.txt.gz"
    truncated.write_bytes(write_unlabeled(tmp_path / "good.gz", heldout).read_bytes()[:-30])
    with pytest.raises(PipelineError, match="not a complete gzip file"):
        pretrain("tiny", "word", data_dir=data, unlabeled=truncated, dim=8, echo=lambda _: None)
    cp949 = tmp_path / "cp949.txt"
    cp949.write_bytes("\n".join(["정말 재밌어요"] * 50).encode("cp949"))
    with pytest.raises(PipelineError, match="not UTF-8"):
        pretrain("tiny", "word", data_dir=data, unlabeled=cp949, dim=8, echo=lambda _: None)
    with pytest.raises(PipelineError, match="missing|not found|no such"):
        pretrain("tiny", "word", data_dir=data, unlabeled=tmp_path / "absent.txt", dim=8, echo=lambda _: None)
    assert sha256_file(vectors) == before                                  # failures publish nothing
    with pytest.raises(ParameterError, match="method must be one of"):
        pretrain("tiny", "word", data_dir=data, method="glove")


def test_download_fetches_a_registered_unlabeled_file_that_auto_pretraining_uses(tiny_corpus, tmp_path):
    source = write_unlabeled(tmp_path / "reviews.txt.gz", [])
    spec = corpora.CORPORA["tiny"]
    corpora.CORPORA["tiny"] = dataclasses.replace(spec, unlabeled=corpora.CorpusFile(
        "reviews.txt.gz", "", "unlabeled", sha256=sha256_file(source), mirror_folder="tiny_unlabeled"))
    data, raw = tmp_path / "data", tmp_path / "data" / "raw" / "tiny" / "reviews.txt.gz"
    quiet = {"data_dir": data, "echo": lambda _: None}
    lines: list[str] = []
    download("tiny", mirror=str(tiny_corpus), data_dir=data, echo=lines.append, progress=False)
    assert "the mirror has no unlabeled reviews" in lines[-1] and not raw.exists()     # optional: a note
    (tiny_corpus / "tiny_unlabeled").mkdir()
    source.rename(tiny_corpus / "tiny_unlabeled" / "reviews.txt.gz")
    download("tiny", mirror=str(tiny_corpus), data_dir=data, echo=lines.append, progress=False)
    assert lines[-1].startswith("download tiny: fetched and verified reviews.txt.gz")
    assert sha256_file(raw) == corpora.CORPORA["tiny"].unlabeled.sha256
    raw.rename(tmp_path / "kept.gz")
    download("tiny", data_dir=data, echo=lines.append, progress=False)                  # no mirror, no URL
    assert "no source for the unlabeled reviews" in lines[-1]
    (tmp_path / "kept.gz").rename(raw)
    for stage in (clean, dedupe, split):
        stage("tiny", **quiet)
    tokenize("tiny", Segmenter("word"), **quiet)
    assert pretrain("tiny", "word", dim=8, **quiet).counts["unlabeled_used"] == 400

    (data / "raw" / "tiny" / "reviews.txt.gz").write_bytes(b"tampered")          # checked against the pin
    with pytest.raises(PipelineError, match="not the registered unlabeled file"):
        pretrain("tiny", "word", dim=8, **quiet)


# --- train ---------------------------------------------------------------------------------------

def test_train_starts_the_embedding_from_the_pretrained_vectors(tmp_path):
    """With a learning rate of 0 the saved embedding rows of pretrained tokens are exactly their vectors."""
    import keras

    folder = write_processed(tmp_path / "data")
    lines: list[str] = []
    train("tiny", "word", data_dir=tmp_path / "data", artifacts_dir=tmp_path / "artifacts", echo=lines.append,
          **{**SMALL, "epochs": 1, "learning_rate": 0.0})
    model = keras.saving.load_model(tmp_path / "artifacts" / "tiny-word" / "model.keras", compile=False)
    weights = model.get_layer("embedding").get_weights()[0]
    vocabulary = read_json(folder / "tokenizer.json")["vocabulary"]["tokens"]
    with np.load(folder / "vectors.npz") as npz:
        vectors = dict(zip(npz["tokens"].tolist(), npz["vectors"], strict=True))
    assert set(vocabulary) <= set(vectors)
    for i, token in enumerate(vocabulary):
        np.testing.assert_array_equal(weights[i + 2], vectors[token])
    counts = read_json(tmp_path / "artifacts" / "tiny-word" / "train.manifest.json")["counts"]
    assert counts["pretrained_rows"] == len(vocabulary) and "embedding rows pretrained" in lines[-1]


def test_train_with_random_embeddings_needs_no_vectors_and_checks_their_size(tmp_path):
    folder = write_processed(tmp_path / "data")
    (folder / "vectors.npz").unlink()
    kwargs = {"data_dir": tmp_path / "data", "artifacts_dir": tmp_path / "artifacts", "echo": lambda _: None}
    train("tiny", "word", **kwargs, **{**SMALL, "epochs": 1, "embeddings": "random"})
    assert read_json(tmp_path / "artifacts" / "tiny-word" / "train.manifest.json")["counts"]["pretrained_rows"] == 0
    with pytest.raises(PipelineError, match="vectors.npz"):                            # the default needs them
        train("tiny", "word", **kwargs, **{**SMALL, "epochs": 1})
    write_processed(tmp_path / "data", vector_dim=4)
    with pytest.raises(ParameterError, match="4-dimensional"):
        train("tiny", "word", **kwargs, **{**SMALL, "epochs": 1})
    with pytest.raises(PipelineError, match="embeddings must be one of"):
        train("tiny", "word", **kwargs, embeddings="glove")
