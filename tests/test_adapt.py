"""--init-from: a corpus's network started from another corpus's trained bundle - the parent's vocabulary kept
(its tokens keep their ids and Embedding rows, the corpus's new tokens added), the refusal of a parent that reads
text otherwise, provenance and re-training when the parent changes, and `auto` never picking the corpus's own."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import pipeline
from pipeline import graph
from pipeline.core.files import read_json, sha256_file
from pipeline.core.stage import Target
from pipeline.errors import ParameterError
from pipeline.stages import init_parent
from pipeline.text.segment import Segmenter
from tests.helpers import SMALL, ksent

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
QUIET = {"echo": lambda line: None}


def _run(root: Path, corpus: str, until: str | None = None, **train) -> list[str]:
    """`ksent run` of the corpus's word tokenization (without the stages that read every corpus's bundles): the
    stages that ran."""
    results = graph.run(Target(corpus, Segmenter("word"), data_dir=root / "data", artifacts_dir=root / "artifacts",
                               train_params={**SMALL, **train}), until=until, shared=False, **QUIET)
    return [r.summary.split(" ")[0].rstrip(":") for r in results if not r.skipped]


def _embedding(bundle: Path) -> np.ndarray:
    from pipeline.core.quiet import import_keras

    keras = import_keras()
    return keras.models.load_model(bundle / "model.keras", compile=False).get_layer("embedding").get_weights()[0]


def test_a_corpus_adapts_from_a_larger_ones_bundle_and_keeps_its_vocabulary(two_declared):
    root = two_declared
    artifacts, data = root / "artifacts", root / "data"
    # auto, the larger corpus first: nothing of another corpus yet, and never its own bundle - from the vectors
    _run(root, "movie", init_from="auto")
    movie = read_json(artifacts / "movie-word" / "bundle.json")
    assert "parent" not in movie["training"] and "init_from" not in movie["training"]["params"]
    assert init_parent("movie", "word", "auto", artifacts, data) is None           # only its own bundle there

    # the smaller corpus: from movie-word, at a learning rate so small that its start is what it keeps
    assert _run(root, "shop", init_from="auto", learning_rate=1e-12)[-3:] == ["pad", "train", "evaluate"]
    shop = read_json(artifacts / "shop-word" / "bundle.json")
    parent = shop["training"]["parent"]
    assert parent["name"] == "movie-word" and parent["corpus"] == "movie"
    assert parent["bundle_sha256"] == sha256_file(artifacts / "movie-word" / "bundle.json")
    learned = read_json(artifacts / "movie-word" / "tokenizer.json")["vocabulary"]["tokens"]
    merged = read_json(artifacts / "shop-word" / "tokenizer.json")["vocabulary"]["tokens"]
    assert merged[:len(learned)] == learned                       # the parent's tokens, at the parent's ids
    assert {"배송", "꼼꼼"} <= set(merged[len(learned):])            # and the corpus's own words after them
    before, after = _embedding(artifacts / "movie-word"), _embedding(artifacts / "shop-word")
    np.testing.assert_allclose(after[:len(before)], before, atol=1e-6)  # every row the parent had, as it had it
    assert parent["inherited_rows"] == len(before)
    assert read_json(data / "processed" / "shop" / "word" / "vocab_report.json")["parent"] == "movie-word"
    # what `/v1/models` and the page show of it
    assert pipeline.load(artifacts / "shop-word").info["adapted_from"] == {"name": "movie-word", "corpus": "movie"}
    assert "adapted_from" not in pipeline.load(artifacts / "movie-word").info
    # a bundle of several corpora (the student stage's) is no parent, however good on validation; a better bundle of
    # one larger corpus is
    for name, corpus in (("joint-word", "movie+elsewhere"), ("better-word", "movie")):
        copy = shutil.copytree(artifacts / "movie-word", artifacts / name)
        manifest = read_json(copy / "bundle.json")
        manifest["corpus"], manifest["threshold"]["val_accuracy"] = corpus, 0.99 if "+" in corpus else 0.98
        (copy / "bundle.json").write_text(json.dumps(manifest), encoding="utf-8")
        if "+" in corpus:
            assert init_parent("shop", "word", "auto", artifacts, data) == artifacts / "movie-word"
    assert init_parent("shop", "word", "auto", artifacts, data) == artifacts / "better-word"
    shutil.rmtree(artifacts / "joint-word")
    shutil.rmtree(artifacts / "better-word")
    # the movie corpus never starts from the smaller shop corpus, even now that it has a bundle
    assert init_parent("movie", "word", "auto", artifacts, data) is None
    assert _run(root, "movie", init_from="auto") == []

    # the parent re-trained: the adapted corpus is out of date, and a run re-makes it from the new parent
    _run(root, "movie", seed=7)
    assert "parent bundle.json" in graph.stale_models(data, artifacts)["shop-word"]
    status = ksent("status", "--corpus", "shop", "--tokenizer", "word", "--data-dir", str(data),
                   "--artifacts-dir", str(artifacts), env={"KSENT_CORPORA": str(root / "decl")})
    print(status.stdout.decode())
    assert status.returncode == 0 and "parent bundle.json" in status.stdout.decode()
    # (its vocabulary is the same, so pad is not)
    assert _run(root, "shop", init_from="auto", learning_rate=1e-12)[-2:] == ["train", "evaluate"]
    assert (read_json(artifacts / "shop-word" / "bundle.json")["training"]["parent"]["bundle_sha256"]
            == sha256_file(artifacts / "movie-word" / "bundle.json"))
    assert "shop-word" not in graph.stale_models(data, artifacts)


def test_a_parent_that_reads_text_otherwise_is_refused_in_one_line(two_declared):
    root = two_declared
    artifacts, data = root / "artifacts", root / "data"
    _run(root, "movie")
    _run(root, "shop", until="pad", init_from="none")            # padded for no parent
    with pytest.raises(ParameterError, match="its tokenization is word, this one's char"):
        init_parent("shop", "char", str(artifacts / "movie-word"), artifacts, data)
    with pytest.raises(ParameterError, match="no bundle there"):
        init_parent("shop", "word", str(root / "nowhere"), artifacts, data)
    # cleaned otherwise: the parent's cleaning differs from the corpus's
    other = shutil.copytree(artifacts / "movie-word", artifacts / "latin-word")
    tokenizer = read_json(other / "tokenizer.json")
    tokenizer["normalizer"]["profile"] = "hangul-latin"
    (other / "tokenizer.json").write_text(json.dumps(tokenizer), encoding="utf-8")
    with pytest.raises(ParameterError, match="trained on another cleaning"):
        init_parent("shop", "word", str(other), artifacts, data)
    run = ksent("train", "--corpus", "shop", "--tokenizer", "word", "--init-from", str(other),
                "--data-dir", str(data), "--artifacts-dir", str(artifacts), env={"KSENT_CORPORA": str(root / "decl")})
    err = run.stderr.decode()
    assert run.returncode != 0 and "trained on another cleaning" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    # auto passes over such a bundle rather than refusing: the movie corpus's own bundle is the only one left
    shutil.rmtree(artifacts / "movie-word")
    assert init_parent("shop", "word", "auto", artifacts, data) is None
    # padded for another parent than the one train is asked to start from: refused, not silently misread
    _run(root, "movie")
    run = ksent("train", "--corpus", "shop", "--tokenizer", "word", "--init-from", str(artifacts / "movie-word"),
                "--data-dir", str(data), "--artifacts-dir", str(artifacts), env={"KSENT_CORPORA": str(root / "decl")})
    assert run.returncode != 0 and "ksent pad --init-from" in run.stderr.decode()
