"""Fixture corpora written by the tests: NSMC-format files, a registered "tiny" corpus and a shopping-format one."""
from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest

from pipeline import corpora
from pipeline.core.files import sha256_file

REPO = Path(__file__).resolve().parents[1]
SHARED_CORPORA = REPO.parent / "shared" / "corpora"

POSITIVE = ["최고의 영화", "정말 재밌어요", "감동적이다", "배우 연기 훌륭하다", "또 보고 싶다", "강력 추천"]
NEGATIVE = ["최악이다", "시간 아깝다", "지루해요", "돈 아까운 영화", "연기 너무 어색하다", "보지 마세요"]
FILLER = ["스토리", "음악", "오늘", "주말에", "친구랑", "극장에서", "그냥", "진짜", "완전", "영화관"]


def synthetic_reviews(n: int, seed: int) -> list[tuple[str, int]]:
    """Reviews whose label follows their sentiment phrase, so a tiny model can learn them."""
    rng = random.Random(seed)
    rows = []
    for _ in range(n):
        label = rng.randint(0, 1)
        words = rng.sample(FILLER, 2) + [rng.choice(POSITIVE if label else NEGATIVE)]
        rng.shuffle(words)
        rows.append((" ".join(words) + rng.choice(["", "!!", "..", " ㅋㅋㅋㅋㅋ", " ^^"]), label))
    return rows


def write_nsmc_file(path: Path, rows: list[tuple[str, int]], start_id: int = 1000,
                    extra_lines: tuple[str, ...] = ()) -> Path:
    lines = ["id\tdocument\tlabel"]
    lines += [f"{start_id + i}\t{text}\t{label}" for i, (text, label) in enumerate(rows)]
    lines += list(extra_lines)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def register_tiny(monkeypatch, mirror: Path) -> None:
    """Register corpus "tiny" with the checksums of the files now in mirror/tiny/ (call again after editing them)."""
    train, test = mirror / "tiny" / "ratings_train.txt", mirror / "tiny" / "ratings_test.txt"
    spec = corpora.Corpus(
        name="tiny", description="test fixture", has_header=True, parse_line=corpora.CORPORA["nsmc"].parse_line,
        files=(corpora.CorpusFile(train.name, f"http://127.0.0.1:9/tiny/{train.name}", "train",
                                  sha256=sha256_file(train)),
               corpora.CorpusFile(test.name, f"http://127.0.0.1:9/tiny/{test.name}", "test", sha256=sha256_file(test))))
    monkeypatch.setitem(corpora.CORPORA, "tiny", spec)


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
    from pipeline.stages.evaluate import evaluate
    from pipeline.stages.train import train
    from pipeline.text.segment import Segmenter
    from test_model_train import SMALL, write_processed

    if request.param.startswith("morpheme"):
        pytest.importorskip("mecab", reason="python-mecab-ko is not installed")
    segmenter = Segmenter("word") if request.param == "word" else Segmenter("morpheme", backend="mecab")
    root = tmp_path_factory.mktemp(request.param)
    write_processed(root / "data", segmenter=segmenter)
    for stage in (train, evaluate):
        stage("tiny", request.param, data_dir=root / "data", artifacts_dir=root / "artifacts", echo=lambda _: None,
              **(SMALL if stage is train else {}))
    return root / "artifacts" / f"tiny-{request.param}", root / "artifacts"


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
