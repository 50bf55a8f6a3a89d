"""The ensemble stage and ensemble bundles: scored like a bundle, predicted exactly as scored, members pinned."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import pipeline
from pipeline.core.files import read_json
from pipeline.errors import ParameterError, PipelineError
from pipeline.model import padded
from pipeline.predict.loading import load_bundle
from pipeline.predict.selection import default_model_dir
from pipeline.stages.ensemble import ensemble, member_names
from pipeline.stages.evaluate import evaluate
from pipeline.stages.report import report as report_stage
from pipeline.stages.train import train
from pipeline.text.segment import Segmenter
from tests.helpers import SMALL, mark_retrained, threads_spin, write_processed

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
REPO = Path(__file__).resolve().parents[1]
MEMBERS = ["tiny-char", "tiny-morpheme-mecab", "tiny-word"]


def logit_mean(probabilities) -> np.ndarray:
    """sigmoid(mean log-odds), computed here independently of pipeline.predict.ensemble.combine."""
    p = np.clip(np.asarray(probabilities, dtype=np.float64), 1e-7, 1 - 1e-7)
    return 1 / (1 + np.exp(-np.log(p / (1 - p)).mean(axis=0)))


@pytest.fixture(scope="module")
def combined(tmp_path_factory):
    """word, char and morpheme bundles of one tiny corpus, and their ensemble: (data_dir, artifacts_dir, lines)."""
    root = tmp_path_factory.mktemp("ensemble")
    data, artifacts = root / "data", root / "artifacts"
    lines: list[str] = []
    for segmenter in (Segmenter("word"), Segmenter("char"), Segmenter("morpheme", backend="mecab")):
        write_processed(data, segmenter=segmenter)
        train("tiny", segmenter.name(), data_dir=data, artifacts_dir=artifacts, echo=lines.append, **SMALL)
        evaluate("tiny", segmenter.name(), data_dir=data, artifacts_dir=artifacts, echo=lines.append)
    ensemble("tiny", data_dir=data, artifacts_dir=artifacts, echo=lines.append)
    return data, artifacts, lines


def test_ensemble_is_the_mean_of_its_members_and_scored_like_a_bundle(combined):
    data, artifacts, lines = combined
    folder = artifacts / "tiny-ensemble"
    manifest = read_json(folder / "bundle.json")
    assert manifest["kind"] == "ensemble" and [m["name"] for m in manifest["members"]] == MEMBERS
    assert manifest["weights"] == pytest.approx([1 / 3] * 3)
    assert any(line.startswith("ensemble tiny: test accuracy") for line in lines)
    members = [load_bundle(artifacts / m["name"]) for m in manifest["members"]]
    # validation accuracy (what picks the default model) is the mean's, recomputed here from the members
    assert manifest["combination"] == "logit-mean"
    val_p = logit_mean([m.predict_ids(padded.read(data / "processed" / "tiny" / m.tok / "val.parquet", "t",
                                                  ("x",))["x"]) for m in members])
    val_y = padded.read(data / "processed" / "tiny" / "word" / "val.parquet", "t", ("label",))["label"]
    assert manifest["training"]["best_val_accuracy"] == pytest.approx(((val_p >= 0.5) == (val_y == 1)).mean(),
                                                                      abs=1e-6)
    rows = pd.read_csv(folder / "predictions.csv", dtype={"id": str, "text": str}, keep_default_na=False)
    metrics = read_json(folder / "metrics.json")
    assert metrics["accuracy"] == pytest.approx((rows["predicted"] == rows["label"]).mean())
    assert metrics["members"] == MEMBERS
    report_stage(artifacts_dir=artifacts, echo=lines.append)
    report = (artifacts / "REPORT.md").read_text(encoding="utf-8")
    assert "| tiny | ensemble |" in report and "| tiny | word |" in report


def test_predict_with_the_ensemble_gives_the_scored_probabilities(combined):
    _, artifacts, _ = combined
    folder = artifacts / "tiny-ensemble"
    rows = pd.read_csv(folder / "predictions.csv", dtype={"id": str, "text": str}, keep_default_na=False)
    texts = rows["text"].tolist()
    clf = pipeline.load(folder)
    assert clf.info["members"] == MEMBERS and clf.info["runtime"] == "onnxruntime"
    np.testing.assert_allclose(clf.predict_proba(texts), rows["probability"], atol=1e-6)
    members = logit_mean([pipeline.load(artifacts / name).predict_proba(texts) for name in MEMBERS])
    np.testing.assert_allclose(clf.predict_proba(texts), members, atol=1e-6)
    records = clf.predict(["정말 재밌어요", ""])
    assert records[1]["empty"] and not records[0]["empty"]
    explanation = clf.explain("정말 재밌어요 최고의 영화")["explanation"]
    assert [m["name"] for m in explanation["members"]] == MEMBERS
    assert [t["token"] for t in explanation["members"][2]["tokens"]] == ["정말", "재밌어요", "최고의", "영화"]
    # the real CLI on the same texts
    command = [sys.executable, "-m", "pipeline", "predict", "--model", str(folder), "--json", *texts[:20]]
    result = subprocess.run(command, capture_output=True, text=True, timeout=120,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    got = [json.loads(line)["probability"] for line in result.stdout.splitlines()]
    np.testing.assert_allclose(got, rows["probability"][:20], atol=1e-6)


def test_rerun_is_skipped_and_default_model_is_chosen_by_validation(combined):
    data, artifacts, _ = combined
    lines: list[str] = []
    ensemble("tiny", data_dir=data, artifacts_dir=artifacts, echo=lines.append)
    assert "up to date, skipped" in lines[0]
    val = {name: read_json(artifacts / name / "bundle.json")["training"]["best_val_accuracy"]
           for name in [*MEMBERS, "tiny-ensemble"]}
    assert val[default_model_dir(artifacts).name] == max(val.values())           # by validation, never test
    assert member_names("tiny", artifacts) == MEMBERS                            # an ensemble is no member


def test_a_changed_or_missing_member_is_refused(combined, tmp_path):
    _, artifacts, _ = combined
    copy = shutil.copytree(artifacts, tmp_path / "artifacts")
    mark_retrained(copy / "tiny-word")
    with pytest.raises(PipelineError, match="member tiny-word changed since the ensemble was made"):
        load_bundle(copy / "tiny-ensemble")
    # the default model passes over the stale ensemble, saying so, instead of failing
    notes: list[str] = []
    chosen = default_model_dir(copy, notes)
    assert chosen.name != "tiny-ensemble" and load_bundle(chosen).predict(["좋아요"])
    assert len(notes) == 1 and "out of date (member tiny-word changed" in notes[0] and "ksent ensemble" in notes[0]
    shutil.rmtree(copy / "tiny-char")
    with pytest.raises(PipelineError, match="member tiny-char is missing"):
        load_bundle(copy / "tiny-ensemble")


def test_probability_mean_ensemble_and_unknown_combinations(combined, tmp_path):
    data, artifacts, _ = combined
    copy = shutil.copytree(artifacts, tmp_path / "artifacts")
    ensemble("tiny", members=["tiny-word", "tiny-char"], combination="mean", data_dir=data, artifacts_dir=copy,
             echo=lambda _: None)
    texts = ["정말 재밌어요", "최악이다 시간 아깝다", "그냥 음악"]
    mean = np.mean([pipeline.load(copy / name).predict_proba(texts) for name in ("tiny-word", "tiny-char")], axis=0)
    np.testing.assert_allclose(pipeline.load(copy / "tiny-ensemble").predict_proba(texts), mean, atol=1e-6)
    with pytest.raises(ParameterError, match="combination must be one of"):
        ensemble("tiny", combination="median", data_dir=data, artifacts_dir=copy)
    manifest = read_json(copy / "tiny-ensemble" / "bundle.json")
    (copy / "tiny-ensemble" / "bundle.json").write_text(json.dumps({**manifest, "combination": "vote"}))
    with pytest.raises(PipelineError, match="combination 'vote' is unknown to this ksent"):
        load_bundle(copy / "tiny-ensemble")


def test_one_member_is_not_an_ensemble(combined):
    data, artifacts, _ = combined
    with pytest.raises(ParameterError, match="needs at least 2 trained bundles"):
        ensemble("tiny", members=["tiny-word"], data_dir=data, artifacts_dir=artifacts)


def test_streamed_ensemble_analyzes_its_morpheme_member_in_worker_processes(combined, monkeypatch):
    from pipeline.text.pool import SegmentPool

    _, artifacts, _ = combined
    clf = pipeline.load(artifacts / "tiny-ensemble", sleeping_threads=True)    # as `ksent predict --file` loads it
    assert set(threads_spin(clf._bundle)) == {False}                         # every member's network
    rows = pd.read_csv(artifacts / "tiny-ensemble" / "predictions.csv", dtype={"text": str},
                       keep_default_na=False)["text"].tolist()
    lines = (rows * 30)[:2001]
    started = []
    original_init = SegmentPool.__init__
    monkeypatch.setattr(SegmentPool, "__init__", lambda pool, segmenter, workers, **kw: started.append(
        segmenter.name()) or original_init(pool, segmenter, workers, **kw))
    batches = [lines[i:i + 500] for i in range(0, len(lines), 500)]
    streamed = [r for records in clf.predict_stream(iter(batches), workers=2, pool_after=600) for r in records]
    assert started == ["morpheme-mecab"]                 # one pool, for the one member that needs an analyzer
    assert [r["text"] for r in streamed] == lines
    np.testing.assert_allclose([r["probability"] for r in streamed], clf.predict_proba(lines), atol=1e-6)
    assert [r["empty"] for r in streamed] == [r["empty"] for r in clf.predict(lines)]
    spinning = pipeline.load(artifacts / "tiny-ensemble")
    assert set(threads_spin(spinning._bundle)) == {True}
    np.testing.assert_array_equal(spinning.predict_proba(lines), clf.predict_proba(lines))


def test_distill_labels_with_worker_processes_and_the_same_numbers(combined, monkeypatch):
    """The distill stage's labelling analyses the next block in worker processes and takes the student's ids
    from the teacher's member with the student's preprocessing: the same ids and probabilities as labelling
    block by block in this process."""
    from pipeline.stages import distill
    from pipeline.text.pool import SegmentPool

    _, artifacts, _ = combined
    teacher = load_bundle(artifacts / "tiny-ensemble")
    student = load_bundle(artifacts / "tiny-morpheme-mecab").preprocessor
    rows = pd.read_csv(artifacts / "tiny-ensemble" / "predictions.csv", dtype={"text": str},
                       keep_default_na=False)["text"].tolist()
    texts = (rows * 30)[:1301]
    monkeypatch.setattr(distill, "LABEL_BLOCK", 300)
    started = []
    original_init = SegmentPool.__init__
    monkeypatch.setattr(SegmentPool, "__init__", lambda pool, segmenter, workers, **kw: started.append(
        segmenter.name()) or original_init(pool, segmenter, workers, **kw))
    x, p = distill._label(teacher, student, texts, "t", workers=2)
    assert started == ["morpheme-mecab"]
    blocks = [texts[i:i + 300] for i in range(0, len(texts), 300)]
    np.testing.assert_array_equal(x, student.transform(texts))
    np.testing.assert_array_equal(p, np.concatenate([teacher.predict_proba(b) for b in blocks]))
    x1, p1 = distill._label(teacher, load_bundle(artifacts / "tiny-char").preprocessor, texts, "t", workers=1)
    np.testing.assert_array_equal(p1, p)
    np.testing.assert_array_equal(x1, load_bundle(artifacts / "tiny-char").transform(texts))


@pytest.mark.parametrize(("key", "value", "what"), [
    ("weights", [float("nan"), 0.5, 0.5], "NaN weight"), ("weights", [1.0, -1.0, 1.0], "negative weight"),
    ("weights", [0.0, 0.0, 0.0], "no weight"), ("members", "../elsewhere/tiny-word", "a path for a member")])
def test_a_damaged_ensemble_manifest_is_refused(combined, tmp_path, key, value, what):
    _, artifacts, _ = combined
    copy = shutil.copytree(artifacts, tmp_path / "artifacts")
    path = copy / "tiny-ensemble" / "bundle.json"
    manifest = read_json(path)
    if key == "members":
        shutil.copytree(copy / "tiny-word", tmp_path / "elsewhere" / "tiny-word")       # reachable, but outside
        manifest["members"][0]["name"] = value
    else:
        manifest[key] = value
    path.write_text(json.dumps(manifest), encoding="utf-8")                  # NaN as JSON's NaN, as Python writes it
    with pytest.raises(PipelineError, match="incomplete or damaged ensemble manifest"):
        load_bundle(copy / "tiny-ensemble")


def test_a_member_of_another_corpus_or_padded_data_it_was_not_trained_on_is_refused(combined, tmp_path):
    data, artifacts, _ = combined
    copy = shutil.copytree(artifacts, tmp_path / "artifacts")
    other = shutil.copytree(copy / "tiny-char", copy / "movies-word")
    manifest = read_json(other / "bundle.json")
    (other / "bundle.json").write_text(json.dumps({**manifest, "corpus": "movies", "tok": "word"}))
    with pytest.raises(ParameterError, match="movies-word is a model of corpus movies, not a trained bundle of tiny"):
        ensemble("tiny", members=["tiny-word", "movies-word"], data_dir=data, artifacts_dir=copy, force=True)
    # the word folder padded again (another vocabulary) but the model not retrained: refused before scoring
    write_processed(data_copy := tmp_path / "data", segmenter=Segmenter("word"), seed=5)
    shutil.copytree(data / "processed" / "tiny" / "char", data_copy / "processed" / "tiny" / "char")
    with pytest.raises(PipelineError, match="tiny-word was trained on other data than .* holds now .* `ksent run "
                                            "--corpus tiny --tokenizer word`"):
        ensemble("tiny", members=["tiny-word", "tiny-char"], data_dir=data_copy, artifacts_dir=copy, force=True)


def test_a_runs_threshold_rule_is_the_ensembles_too(combined):
    from pipeline.core.stage import Target
    from pipeline.stages import ensemble as ensemble_stage

    data, artifacts, _ = combined
    ruled = Target("tiny", None, data_dir=data, artifacts_dir=artifacts, train_params={"threshold": "balanced"})
    assert ensemble_stage.plan_for(ruled).params["threshold"] == "balanced"
    assert ensemble_stage.plan_for(Target("tiny", None, data_dir=data, artifacts_dir=artifacts)).params[
        "threshold"] == "accuracy"
