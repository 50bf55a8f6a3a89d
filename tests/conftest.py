"""pytest fixtures: a registered "tiny" corpus in NSMC format, a shopping-format one, and a bundle
trained once per session (the helpers they use are in tests/helpers.py)."""
from __future__ import annotations

import csv
import dataclasses
import random
from pathlib import Path

import pytest

from pipeline import corpora
from pipeline.core.files import sha256_file
from tests.helpers import SHARED_CORPORA, register_tiny, synthetic_reviews, trained_bundle, write_nsmc_file
from tests.own_export import DECLARATION

SHOP_SUFFIX = " 배송 빠르고 포장 꼼꼼"         # what makes the "shop" corpus's reviews shop-like


@pytest.fixture
def tiny_corpus(tmp_path, monkeypatch):
    """A corpus "tiny" in NSMC format, mirrored under tmp_path/mirror/tiny/ and registered."""
    mirror = tmp_path / "mirror"
    write_nsmc_file(mirror / "tiny" / "ratings_train.txt", synthetic_reviews(300, seed=1), 1000)
    write_nsmc_file(mirror / "tiny" / "ratings_test.txt", synthetic_reviews(100, seed=2), 5000)
    register_tiny(monkeypatch, mirror)
    return mirror


BUNDLE_TOKENIZERS = ("word", "morpheme-mecab")


@pytest.fixture(scope="session", params=BUNDLE_TOKENIZERS)
def evaluated(request, tmp_path_factory):
    """A bundle trained and evaluated on the fixture corpus: (bundle_dir, artifacts_dir).

    Trained once per session and shared by the bundle, API and runtime tests: read-only
    (copy it to damage it, see test_bundle's `bundle_copy`).
    """
    from pipeline.text.segment import Segmenter

    if request.param.startswith("morpheme"):
        pytest.importorskip("mecab", reason="python-mecab-ko is not installed")
    segmenter = Segmenter("word") if request.param == "word" else Segmenter("morpheme", backend="mecab")
    bundle = trained_bundle(tmp_path_factory.mktemp(request.param), request.param, segmenter)
    return bundle, bundle.parent


@pytest.fixture(scope="session")
def word_bundle(tmp_path_factory):
    """A tiny word bundle, trained and evaluated once per session for the `ksent serve` and web page
    tests, which start servers on it: read-only."""
    return trained_bundle(tmp_path_factory.mktemp("word-bundle"), "word")


@pytest.fixture
def tiny_shop(tmp_path, monkeypatch):
    """Corpus "tiny_shop" in naver_shopping.txt's format, registered with the shopping reader, and a mirror."""
    rng = random.Random(5)
    lines = (SHARED_CORPORA / "naver_shopping" / "preview_head10.txt").read_text(encoding="utf-8").splitlines()
    lines += [f"{rng.choice((4, 5)) if label else rng.choice((1, 2))}\t{text}"
              for text, label in synthetic_reviews(400, seed=7)]
    path = tmp_path / "mirror" / "tiny_shop" / "naver_shopping.txt"
    path.parent.mkdir(parents=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    shop = corpora.CORPORA["naver_shopping"]
    spec = dataclasses.replace(shop, name="tiny_shop", files=(dataclasses.replace(
        shop.files[0], url="http://127.0.0.1:9/naver_shopping.txt", git_blob_sha1=None, sha256=sha256_file(path)),))
    monkeypatch.setitem(corpora.CORPORA, "tiny_shop", spec)
    return tmp_path / "mirror"


def _write_csv(path: Path, reviews: list[tuple[str, int]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["review_id", "review", "label"])
        writer.writerows((i, text, label) for i, (text, label) in enumerate(reviews))


@pytest.fixture
def two_declared(tmp_path, monkeypatch):
    """Corpora "movie" (with unlabeled reviews) and "shop" (without), declared in tmp_path/decl."""
    files, decl = tmp_path / "files", tmp_path / "decl"
    _write_csv(files / "movie.csv", synthetic_reviews(300, seed=1))
    _write_csv(files / "shop.csv", [(text + SHOP_SUFFIX, label) for text, label in synthetic_reviews(200, seed=3)])
    (files / "unlabeled.txt").write_text("\n".join(t for t, _ in synthetic_reviews(400, seed=5)) + "\n",
                                         encoding="utf-8")
    decl.mkdir()
    (decl / "movie.toml").write_text(DECLARATION.format(path=(files / "movie.csv").as_posix())
                                     + f'\n[unlabeled]\npath = "{(files / "unlabeled.txt").as_posix()}"\n'
                                     'format = { type = "lines" }\n',
                                     encoding="utf-8")
    (decl / "shop.toml").write_text(DECLARATION.format(path=(files / "shop.csv").as_posix()),
                                    encoding="utf-8")
    monkeypatch.setenv("KSENT_CORPORA", str(decl))
    corpora.reload()
    yield tmp_path
    corpora.reload()
