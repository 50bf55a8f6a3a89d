"""word2vec vectors for the Embedding layer (pipeline.embeddings) and their use by the train stage."""
from __future__ import annotations

import numpy as np
import pytest

from pipeline.embeddings import word2vec_vectors
from pipeline.io import PipelineError, read_json
from pipeline.stages.train import train
from tests.test_model_train import SMALL, write_processed

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def _cos(a, b):
    return float(a @ b / np.linalg.norm(a) / np.linalg.norm(b))


def _sequences(n=5000, seed=0):
    """Padded id rows: ids 2 and 3 share their contexts (10-13), id 4 has others (14-17)."""
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n):
        word, context = [(2, (10, 11, 12, 13)), (3, (10, 11, 12, 13)), (4, (14, 15, 16, 17))][rng.integers(3)]
        left, right = rng.choice(context, 2), rng.choice(context, 2)
        rows.append([0, 0, *left, word, *right])
    return np.array(rows, dtype=np.int32)


def test_word2vec_vectors_follow_shared_contexts_and_are_reproducible():
    x = _sequences()
    vectors = word2vec_vectors(x, 20, 16, seed=1)
    assert vectors.shape == (20, 16) and vectors.dtype == np.float32 and np.isfinite(vectors).all()
    assert _cos(vectors[2], vectors[3]) > _cos(vectors[2], vectors[4]) + 0.3
    np.testing.assert_array_equal(vectors, word2vec_vectors(x, 20, 16, seed=1))       # one worker: same result
    assert not np.array_equal(vectors, word2vec_vectors(x, 20, 16, seed=2))
    # ids the train split never uses (padding 0, 18, 19) still get small finite vectors
    assert np.abs(vectors[[0, 18, 19]]).max() < 1.0


def test_word2vec_vectors_of_no_tokens():
    vectors = word2vec_vectors(np.zeros((3, 5), np.int32), 7, 4, seed=0)
    assert vectors.shape == (7, 4) and np.isfinite(vectors).all()


def test_train_starts_the_embedding_from_word2vec(tmp_path, monkeypatch):
    """With a learning rate of 0 the saved embedding is exactly the matrix word2vec gave."""
    import keras

    import pipeline.embeddings

    given = {}

    def fake_vectors(x, vocab_size, dim, *, seed):
        given.update(rows=len(x), seed=seed)
        return np.arange(vocab_size * dim, dtype=np.float32).reshape(vocab_size, dim) / 1000

    monkeypatch.setattr(pipeline.embeddings, "word2vec_vectors", fake_vectors)
    write_processed(tmp_path / "data")
    lines: list[str] = []
    train("tiny", "word", data_dir=tmp_path / "data", artifacts_dir=tmp_path / "artifacts", echo=lines.append,
          **{**SMALL, "epochs": 1, "learning_rate": 0.0})
    assert given == {"rows": 300, "seed": 42}                       # the train split only
    model = keras.saving.load_model(tmp_path / "artifacts" / "tiny-word" / "model.keras", compile=False)
    weights = model.get_layer("embedding").get_weights()[0]
    np.testing.assert_allclose(weights, fake_vectors(np.zeros((0, 1)), *weights.shape, seed=0))
    manifest = read_json(tmp_path / "artifacts" / "tiny-word" / "train.manifest.json")
    assert manifest["params"]["embeddings"] == "word2vec" and manifest["counts"]["embedding_seconds"] >= 0
    assert "word2vec" in lines[-1]


def test_train_with_random_embeddings_skips_word2vec(tmp_path, monkeypatch):
    import pipeline.embeddings

    def fail(*args, **kwargs):
        raise AssertionError("word2vec should not run")

    monkeypatch.setattr(pipeline.embeddings, "word2vec_vectors", fail)
    write_processed(tmp_path / "data")
    train("tiny", "word", data_dir=tmp_path / "data", artifacts_dir=tmp_path / "artifacts", echo=lambda _: None,
          **{**SMALL, "epochs": 1, "embeddings": "random"})
    counts = read_json(tmp_path / "artifacts" / "tiny-word" / "train.manifest.json")["counts"]
    assert counts["embedding_seconds"] == 0
    with pytest.raises(PipelineError, match="embeddings must be one of"):
        train("tiny", "word", data_dir=tmp_path / "data", artifacts_dir=tmp_path / "artifacts",
              embeddings="glove")
