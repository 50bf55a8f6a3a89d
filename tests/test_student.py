"""The student stage: one network for every corpus, taught by the router - its joint preprocessing (vocabularies
merged, nothing of the largest corpus's lost), the corpora evened out, re-made when an expert changes; and a
build of one corpus has no such student."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pipeline import graph
from pipeline.core.files import read_json, sha256_file
from pipeline.core.stage import Target
from pipeline.errors import ParameterError, PipelineError
from pipeline.params import DISTILL, STUDENT
from pipeline.predict.loading import load_bundle
from pipeline.predict.router import at_threshold
from pipeline.predict.selection import default_model_dir
from pipeline.stages import student as student_stage, student_architecture
from pipeline.stages.student import corpus_weights, plan as student_plan
from pipeline.text.normalize import Normalizer
from pipeline.text.preprocess import Preprocessor
from pipeline.text.segment import Segmenter
from pipeline.text.vocab import Vocabulary
from tests.helpers import SMALL, synthetic_reviews

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
QUIET = {"echo": lambda line: None}


def _preprocessor(texts: list[str], maxlen: int, profile: str = "hangul") -> Preprocessor:
    segmenter = Segmenter("word")
    normalizer = Normalizer(profile=profile)
    vocab = Vocabulary().fit(segmenter.segment_in_process([normalizer(t) for t in texts], progress=False))
    return Preprocessor(normalizer, segmenter, vocab, maxlen)


def test_merged_preprocessing_keeps_the_first_ids_and_knows_every_corpus_token():
    movie = _preprocessor(["정말 재밌어요 최고의 영화", "지루해요 시간 아깝다 영화"], maxlen=4)
    shop = _preprocessor(["배송 빠르고 포장 꼼꼼 최고의 제품", "포장 엉망 지루해요"], maxlen=6)
    joint = movie.merged([shop])
    assert joint.vocabulary.tokens[:len(movie.vocabulary.tokens)] == movie.vocabulary.tokens   # ids unchanged
    assert set(joint.vocabulary.tokens) == set(movie.vocabulary.tokens) | set(shop.vocabulary.tokens)
    assert len(joint.vocabulary.tokens) == len(set(joint.vocabulary.tokens))
    assert joint.maxlen == 6
    # a corpus's padded rows re-indexed are what the joint preprocessing makes of the same texts
    for source, texts in ((movie, ["정말 재밌어요", "시간 아깝다 영화"]),
                          (shop, ["포장 꼼꼼 최고의 제품", "배송 엉망"])):
        np.testing.assert_array_equal(joint.reindex(source.transform(texts), source), joint.transform(texts))
    assert joint.transform(["배송 빠르고"]).max() > 1 and movie.transform(["배송 빠르고"]).max() <= 1    # 1 = OOV

    with pytest.raises(PipelineError, match="differ in their normalizer"):
        movie.merged([_preprocessor(["배송 빠르고"], maxlen=4, profile="hangul-latin")])


def test_corpus_weights_even_out_the_corpora_as_balance_says():
    rows = {"big": 600_000, "small": 40_000}
    for balance in (0.0, 0.5, 1.0):
        weight = corpus_weights(rows, balance)
        total = {c: weight[c] * n for c, n in rows.items()}
        assert sum(total.values()) == pytest.approx(sum(rows.values()))         # the mean row weighs 1
        assert total["big"] / total["small"] == pytest.approx((600_000 / 40_000) ** (1 - balance))
    assert corpus_weights(rows, 0.0) == pytest.approx({"big": 1.0, "small": 1.0})


def _run(root: Path, corpus: str, **train) -> list[str]:
    """`ksent run` of the corpus's word tokenization: the stages that ran (each result's line starts with its name)."""
    results = graph.run(Target(corpus, Segmenter("word"), data_dir=root / "data", artifacts_dir=root / "artifacts",
                               train_params={**SMALL, **train}), **QUIET)
    return [r.summary.split(" ")[0].rstrip(":") for r in results if not r.skipped]


def test_the_router_teaches_one_student_of_every_corpus_and_a_new_expert_re_makes_it(two_declared, monkeypatch):
    root = two_declared
    artifacts = root / "artifacts"
    stages = _run(root, "movie")
    assert "student" not in stages and not (artifacts / "student").exists()       # one corpus: no joint student
    stages = _run(root, "shop")
    assert stages[-4:] == ["router", "student", "domains", "report"]

    student = read_json(artifacts / "student" / "bundle.json")
    taught = student["distillation"]
    assert student["corpus"] == "movie+shop" and taught["teacher"] == "router"
    assert taught["started_from"] == "movie-word"                  # the largest corpus's member of its tokenization
    # its own batches and learning rate (pipeline.params.STUDENT), the member's network
    member = read_json(artifacts / "movie-word" / "bundle.json")["training"]["params"]
    assert {k: student["training"]["params"][k] for k in ("batch_size", "learning_rate", "units")} == {
        "batch_size": STUDENT.params["batch_size"].default, "learning_rate": STUDENT.params["learning_rate"].default,
        "units": member["units"]}
    assert (member["batch_size"], member["learning_rate"]) != (512, 0.002)
    assert taught["teacher_bundle_sha256"] == sha256_file(artifacts / "router" / "bundle.json")
    rows = {c: taught["corpora"][c]["gold_rows"] + taught["corpora"][c]["teacher_labelled_rows"]
            for c in ("movie", "shop")}
    assert taught["corpora"]["movie"]["teacher_labelled_rows"] > 300                # the unlabeled reviews
    assert taught["corpora"]["shop"]["teacher_labelled_rows"] == 0                  # declares none
    assert {c: taught["corpora"][c]["row_weight"] for c in rows} == pytest.approx(
        corpus_weights(rows, 0.5), abs=1e-6)

    # one preprocessing knows both corpora's words; the student is a bundle like any other, scored on each corpus
    bundle = load_bundle(artifacts / "student")
    tokens = set(bundle.preprocessor.vocabulary.tokens)
    assert {"배송", "꼼꼼"} <= tokens and tokens >= set(load_bundle(artifacts / "movie-word").preprocessor
                                                         .vocabulary.tokens)
    assert bundle.predict(["배송 빠르고 포장 꼼꼼 좋아요"])[0]["sentiment"] in ("positive", "negative")
    cells = read_json(artifacts / "domains.json")["bundles"]["student"]["cells"]
    assert set(cells) == {"movie", "shop"}
    metrics = read_json(artifacts / "student" / "metrics.json")
    for corpus in ("movie", "shop"):
        assert metrics["per_corpus"][corpus]["accuracy"] == pytest.approx(cells[corpus]["test"]["accuracy"],
                                                                          abs=1e-6)    # no train/serve skew
    default_model_dir(artifacts)                                  # chosen among them all without an error

    # a re-run that only trains otherwise keeps the router's labels (artifacts/cache/); a new teacher labels again
    calls = []
    real_label = student_stage._label
    monkeypatch.setattr(student_stage, "_label", lambda *a, **kw: calls.append(a[3]) or real_label(*a, **kw))
    student_stage.student(data_dir=root / "data", artifacts_dir=artifacts, force=True, epochs=1, echo=lambda _: None)
    assert calls == [] and read_json(artifacts / "student" / "bundle.json")["training"]["params"]["epochs"] == 1
    # the labelling: with workers, the next block's analysis runs in worker processes - the same ids and labels
    texts = [t for t, _ in synthetic_reviews(250, seed=11)]
    one = student_stage._label(load_bundle(artifacts / "router"), bundle.preprocessor, texts, "t")
    monkeypatch.setattr(student_stage, "LABEL_BLOCK", 100)
    two = student_stage._label(load_bundle(artifacts / "router"), bundle.preprocessor, texts, "t", workers=2)
    for a, b in zip(one, two, strict=True):
        np.testing.assert_array_equal(a, b)
    # --routing origin: a corpus's reviews labelled by its own expert, not by the gate's mix of both
    router = load_bundle(artifacts / "router")
    ids, origin = student_stage._label(router, bundle.preprocessor, texts, "t", workers=2, domain="shop")
    np.testing.assert_array_equal(ids, one[0])
    expert = router.expert("shop")
    np.testing.assert_allclose(origin, at_threshold(expert.predict_proba(texts), expert.threshold), atol=1e-6)
    assert not np.allclose(origin, one[1], atol=1e-3)
    assert "student" not in graph.stale_models(root / "data", artifacts)

    # an expert retrained: the router is made again, and so the student, from the new teacher
    made = sha256_file(artifacts / "student" / "bundle.json")
    calls.clear()
    stages = _run(root, "shop", seed=7)
    assert stages[-4:] == ["router", "student", "domains", "report"]
    assert calls == ["student: movie", "student: shop"]
    student = read_json(artifacts / "student" / "bundle.json")
    assert sha256_file(artifacts / "student" / "bundle.json") != made
    assert student["distillation"]["teacher_bundle_sha256"] == sha256_file(artifacts / "router" / "bundle.json")
    assert "student" not in graph.stale_models(root / "data", artifacts)

    # corpora cleaned differently: no student (one network cannot read both), the rest of the build goes on
    normalizer = root / "data" / "interim" / "shop" / "normalizer.json"
    normalizer.write_text(json.dumps({**read_json(normalizer), "profile": "hangul-latin"}), encoding="utf-8")
    with pytest.raises(ParameterError, match="differ in their cleaning"):
        student_plan(data_dir=root / "data", artifacts_dir=artifacts)
    shared = graph.run_after_bundles(Target("", data_dir=root / "data", artifacts_dir=artifacts), **QUIET)
    assert [r.summary.split(" ")[0].rstrip(":") for r in shared] == ["router", "domains", "report"]


def test_a_network_starts_from_a_trained_one_with_its_rows_where_the_vocabulary_moved_them(tmp_path):
    from pipeline.model.network import build_model
    from pipeline.model.training import start_from

    arch = {"embedding_dim": 4, "units": 3, "layers": 1, "bidirectional": True, "dropout": 0.1, "cell": "lstm",
            "learning_rate": 0.01}
    parent = build_model(6, None, **arch)
    parent.save(tmp_path / "model.keras")
    child = build_model(9, None, **arch)
    before = child.get_layer("embedding").get_weights()[0].copy()
    rows = np.array([0, 1, 2, 5, -1, 3])              # parent id -> child id (4: a token the child lacks)
    assert start_from(child, tmp_path / "model.keras", rows, "test") == 5
    mine, theirs = child.get_layer("embedding").get_weights()[0], parent.get_layer("embedding").get_weights()[0]
    for old, new in enumerate(rows):
        if new >= 0:
            np.testing.assert_array_equal(mine[new], theirs[old])
    np.testing.assert_array_equal(mine[[4, 6, 7, 8]], before[[4, 6, 7, 8]])       # rows no parent id maps to
    for name in ("bilstm_1", "positive"):
        for a, b in zip(child.get_layer(name).get_weights(), parent.get_layer(name).get_weights(), strict=True):
            np.testing.assert_array_equal(a, b)
    with pytest.raises(PipelineError, match="not the same network"):
        start_from(build_model(9, None, **{**arch, "units": 5}), tmp_path / "model.keras", rows, "test")


def test_the_validation_accuracy_weighs_each_corpus_as_its_rows_weights_say(tmp_path):
    from types import SimpleNamespace

    from pipeline.model.distillation import fit_student

    rng = np.random.default_rng(0)
    x = rng.integers(2, 20, size=(200, 6)).astype(np.int32)
    y = rng.integers(0, 2, size=200).astype(np.float32)
    val_x = rng.integers(2, 20, size=(60, 6)).astype(np.int32)
    val_y = np.r_[np.ones(50), np.zeros(10)].astype(np.float32)      # a large corpus of positives, a small one
    val_w = np.r_[np.full(50, 60 / (2 * 50)), np.full(10, 60 / (2 * 10))].astype(np.float32)
    arch = {"embedding_dim": 4, "units": 3, "layers": 1, "bidirectional": False, "dropout": 0.0, "cell": "lstm",
            "learning_rate": 0.01, "batch_size": 32, "embeddings": "random"}
    params = {"architecture": arch, "seed": 1, "epochs": 1, "patience": 1, "lr_decay": 1.0}
    model, history, *_ = fit_student(x, y, np.ones(200, np.float32), val_x, val_y, val_w,
                                     SimpleNamespace(vocab_size=20), [], params, tmp_path / "best.weights.h5", "test")
    right = (model.predict(val_x, verbose=0).reshape(-1) >= 0.5) == (val_y >= 0.5)
    assert history["val_accuracy"][0] == pytest.approx((right[:50].mean() + right[50:].mean()) / 2, abs=1e-6)


def test_the_students_batch_size_and_learning_rate_are_its_own_or_the_members(tmp_path):
    member = tmp_path / "nsmc-word"
    member.mkdir()
    (member / "bundle.json").write_text(json.dumps({"training": {"params": {
        "units": 64, "batch_size": 128, "learning_rate": 0.005}}}), encoding="utf-8")
    student = {k: p.default for k, p in STUDENT.params.items()}
    arch = student_architecture("word", member, student)
    assert (arch["units"], arch["batch_size"], arch["learning_rate"]) == (64, 512, 0.002)
    arch = student_architecture("word", member, {**student, "batch_size": 0, "learning_rate": 0})     # 0: the member's
    assert (arch["batch_size"], arch["learning_rate"]) == (128, 0.005)
    distill = {k: p.default for k, p in DISTILL.params.items()}                      # one corpus: as before
    assert (student_architecture("word", member, distill)["batch_size"], DISTILL.params["patience"].default) == (128, 1)


def test_a_student_that_starts_from_the_member_must_be_the_members_network(tmp_path):
    member = tmp_path / "nsmc-word"
    member.mkdir()
    (member / "bundle.json").write_text(json.dumps({"training": {"params": {"units": 64}}}), encoding="utf-8")
    student = {k: p.default for k, p in STUDENT.params.items()}
    members = student_architecture("word", member)
    student_stage._check_same_network(student_architecture("word", member, student), members, member)  # the same
    for other in ({"units": 96}, {"network": "gru" if members["cell"] == "lstm" else "lstm"}):
        with pytest.raises(ParameterError, match="--start vectors"):
            student_stage._check_same_network(student_architecture("word", member, {**student, **other}), members,
                                              member)
