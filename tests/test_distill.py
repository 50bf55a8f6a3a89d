"""The distill stage: the student learns the teacher's probabilities, held-out text never reaches it, it is
re-made when the teacher changes, and it is an ordinary bundle (not one of the ensemble's members)."""
from __future__ import annotations

import shutil

import numpy as np
import pandas as pd
import pytest

from pipeline import layout
from pipeline.core.files import read_json, sha256_file
from pipeline.errors import MissingInputError, ParameterError
from pipeline.model import padded
from pipeline.predict import loading as bundle_module
from pipeline.predict.bundle import Bundle
from pipeline.predict.loading import load_bundle
from pipeline.predict.selection import default_model_dir
from pipeline.stages.distill import distill
from pipeline.stages.ensemble import ensemble, member_names
from pipeline.stages.evaluate import evaluate
from pipeline.stages.report import report as report_stage
from pipeline.stages.train import train
from pipeline.text.normalize import Normalizer
from pipeline.text.segment import Segmenter
from tests.helpers import (
    SMALL,
    processed_reviews,
    python,
    register_tiny,
    synthetic_reviews,
    write_nsmc_file,
    write_processed,
    write_split,
)

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
STUDENT = {"epochs": 4, "soft_weight": 1.0}


@pytest.fixture(scope="module")
def taught(tmp_path_factory):
    """A tiny corpus with word and char bundles, their ensemble and an unlabeled file: (data, artifacts, unlabeled,
    heldout lines in it, empty lines in it)."""
    root = tmp_path_factory.mktemp("distill")
    patch = pytest.MonkeyPatch()
    write_nsmc_file(root / "mirror" / "tiny" / "ratings_train.txt", synthetic_reviews(20, seed=1))
    write_nsmc_file(root / "mirror" / "tiny" / "ratings_test.txt", synthetic_reviews(20, seed=2))
    register_tiny(patch, root / "mirror")
    data, artifacts = root / "data", root / "artifacts"
    for segmenter in (Segmenter("word"), Segmenter("char")):
        write_processed(data, segmenter=segmenter)
        train("tiny", segmenter.name(), data_dir=data, artifacts_dir=artifacts, echo=lambda _: None, **SMALL)
        evaluate("tiny", segmenter.name(), data_dir=data, artifacts_dir=artifacts, echo=lambda _: None)
    ensemble("tiny", data_dir=data, artifacts_dir=artifacts, echo=lambda _: None)
    write_split(data, "tiny", seed=9)
    split = pd.read_parquet(data / "interim" / "tiny" / "split.parquet")
    heldout = split.loc[split["split"] != "train", "text"].tolist()[:7]
    lines = [text for text, _ in processed_reviews(1500, seed=21)] + heldout + ["", "   ", "ㅡㅡ;;"]
    unlabeled = root / "unlabeled.txt"
    unlabeled.write_text("\n".join(lines) + "\n", encoding="utf-8")
    normalizer = Normalizer()
    held = set(split.loc[split["split"] != "train", "text"])
    expected = {"heldout": sum(normalizer(t) in held and bool(normalizer(t).strip()) for t in lines),
                "empty": sum(not normalizer(t).strip() for t in lines)}
    yield data, artifacts, unlabeled, expected
    patch.undo()


def _test_accuracy(folder) -> float:
    return read_json(folder / "metrics.json")["accuracy"]


def test_the_student_is_an_ordinary_bundle_taught_by_the_ensemble(taught):
    data, artifacts, unlabeled, expected = taught
    lines = []
    result = distill("tiny", data_dir=data, artifacts_dir=artifacts, unlabeled=unlabeled, student="word",
                     echo=lines.append, **STUDENT)
    folder = artifacts / "tiny-word-student"
    manifest = read_json(folder / "bundle.json")
    assert manifest["tok"] == "word" and manifest["distillation"]["teacher"] == "tiny-ensemble"
    assert manifest["onnx"]["graph"] == ("fused" if load_bundle(folder).preprocessor.padding == "post" else "loop")
    # held-out and empty lines are dropped and counted; the rest are labelled by the teacher
    assert result.counts["heldout_text"] == expected["heldout"] > 0
    assert result.counts["empty"] == expected["empty"] >= 2
    assert result.counts["teacher_labelled_rows"] == 1500 + 7 + 3 - expected["heldout"] - expected["empty"]
    assert any(line.startswith("distill tiny: test accuracy") for line in lines)
    # an ordinary bundle: predicts what it was scored with, and the ensemble does not take it as a member
    student = load_bundle(folder)
    assert student.predict_proba(["정말 재밌어요 최고의 영화"])[0] > 0.5 > student.predict_proba(["시간 아깝다"])[0]
    assert _test_accuracy(folder) > 0.8
    # its recorded validation accuracy is its predictions' on the validation split, review by review
    val_rows = padded.read(layout.processed_dir(data, "tiny", "word") / "val.parquet", "tiny/word")
    val_accuracy = float(((student.predict_ids(val_rows["x"]) >= 0.5) == (val_rows["label"] == 1)).mean())
    assert manifest["training"]["best_val_accuracy"] == pytest.approx(val_accuracy, abs=1e-6)
    assert "tiny-word-student" not in member_names("tiny", artifacts)
    assert member_names("tiny", artifacts) == ["tiny-char", "tiny-word"]
    report_stage(artifacts_dir=artifacts, echo=lambda _: None)
    assert "| tiny | word student |" in (artifacts / "REPORT.md").read_text(encoding="utf-8")
    # the default model is the best by validation accuracy, student or teacher
    val = {p: read_json(p / "bundle.json")["training"]["best_val_accuracy"]
           for p in (folder, artifacts / "tiny-ensemble", artifacts / "tiny-word", artifacts / "tiny-char")}
    assert default_model_dir(artifacts) in [p for p, v in val.items() if v == max(val.values())]


def test_the_teachers_probabilities_not_the_gold_labels_decide_what_the_student_learns(taught, tmp_path,
                                                                                       monkeypatch):
    data, artifacts, unlabeled, _ = taught
    contrary = tmp_path / "artifacts"
    shutil.copytree(artifacts, contrary)
    shutil.rmtree(contrary / "cache", ignore_errors=True)   # the real teacher's labels: this one differs in memory only
    real_load = bundle_module.load_bundle

    class Contrary:                       # the real ensemble, saying the opposite
        def __init__(self, teacher):
            self.teacher = teacher

        def __getattr__(self, name):
            return getattr(self.teacher, name)

        def predict_proba(self, texts):
            return 1 - self.teacher.predict_proba(texts)

        def proba_of_ids(self, xs):
            return 1 - self.teacher.proba_of_ids(xs)

    def load_contrary(directory, **kw):
        loaded = real_load(directory, **kw)
        return Contrary(loaded) if directory.name == "tiny-ensemble" else loaded

    monkeypatch.setattr(bundle_module, "load_bundle", load_contrary)
    # 300 gold train rows against ~1,500 teacher-labelled ones at weight 5: the teacher outweighs them
    distill("tiny", data_dir=data, artifacts_dir=contrary, unlabeled=unlabeled, student="word", echo=lambda _: None,
            force=True, epochs=4, soft_weight=5.0, threshold=0.5)     # not a threshold that reads it backwards
    assert _test_accuracy(contrary / "tiny-word-student") < 0.3
    student = real_load(contrary / "tiny-word-student")
    assert student.predict_proba(["정말 재밌어요 최고의 영화"])[0] < 0.5


def test_distill_is_skipped_when_up_to_date_and_re_made_when_the_teacher_changes(taught):
    data, artifacts, unlabeled, _ = taught
    kwargs = {"data_dir": data, "artifacts_dir": artifacts, "unlabeled": unlabeled, "student": "word",
              "echo": lambda _: None, **STUDENT}
    distill("tiny", **kwargs)
    assert distill("tiny", **kwargs).skipped
    ensemble("tiny", data_dir=data, artifacts_dir=artifacts, combination="mean", echo=lambda _: None)  # a new teacher
    again = distill("tiny", **kwargs)
    assert not again.skipped
    recorded = read_json(artifacts / "tiny-word-student" / "bundle.json")["distillation"]["teacher_bundle_sha256"]
    assert recorded == sha256_file(artifacts / "tiny-ensemble" / "bundle.json")


def test_a_re_run_keeps_the_teachers_labels_and_equals_a_run_that_labels_again(taught, tmp_path, monkeypatch):
    from pipeline.stages import distill as distill_module

    data, artifacts, unlabeled, _ = taught
    artifacts = tmp_path / "artifacts"
    shutil.copytree(taught[1], artifacts)
    cache = layout.teacher_labels_cache(artifacts, "tiny-word-student")
    shutil.rmtree(cache.parent, ignore_errors=True)
    ensemble("tiny", data_dir=data, artifacts_dir=artifacts, combination="logit-mean", echo=lambda _: None)
    calls = []
    real_label = distill_module._label
    monkeypatch.setattr(distill_module, "_label", lambda *a, **kw: calls.append(1) or real_label(*a, **kw))
    kwargs = {"data_dir": data, "artifacts_dir": artifacts, "unlabeled": unlabeled, "student": "word",
              "echo": lambda _: None, "soft_weight": 1.0, "force": True}
    folder = artifacts / "tiny-word-student"

    distill("tiny", epochs=4, **kwargs)
    assert len(calls) == 1 and cache.is_file()
    distill("tiny", epochs=3, **kwargs)                  # another training, the same teacher and texts
    assert len(calls) == 1
    kept = (folder / "predictions.csv").read_bytes()
    cache.unlink()
    distill("tiny", epochs=3, **kwargs)                  # labelled again: the same student
    assert len(calls) == 2 and (folder / "predictions.csv").read_bytes() == kept

    cache.write_bytes(cache.read_bytes()[:100])          # a damaged cache is labelled over, not an error
    distill("tiny", epochs=3, **kwargs)
    assert len(calls) == 3 and (folder / "predictions.csv").read_bytes() == kept
    ensemble("tiny", data_dir=data, artifacts_dir=artifacts, combination="mean", echo=lambda _: None)  # a new teacher
    distill("tiny", epochs=3, **kwargs)
    assert len(calls) == 4
    with np.load(cache) as saved:
        assert len(saved["tiny.p"]) == read_json(folder / "bundle.json")["distillation"]["teacher_labelled_rows"]
    cache.unlink()
    cache.mkdir()                                        # neither readable nor writable: the run goes on
    distill("tiny", epochs=3, **kwargs)
    assert len(calls) == 5 and read_json(folder / "bundle.json")["training"]["params"]["epochs"] == 3


def test_distill_needs_an_ensemble_and_unlabeled_text(taught, tmp_path):
    data, artifacts, unlabeled, _ = taught
    with pytest.raises(MissingInputError, match="ksent ensemble --corpus tiny"):
        distill("tiny", data_dir=data, artifacts_dir=tmp_path, unlabeled=unlabeled, echo=lambda _: None)
    with pytest.raises(ParameterError, match="--unlabeled PATH"):
        distill("tiny", data_dir=data, artifacts_dir=artifacts, unlabeled="none", echo=lambda _: None)
    with pytest.raises(ParameterError, match="soft_weight"):
        distill("tiny", data_dir=data, artifacts_dir=artifacts, unlabeled=unlabeled, soft_weight=0,
                echo=lambda _: None)
    assert np.isfinite(read_json(artifacts / "tiny-ensemble" / "bundle.json")["weights"]).all()


def test_the_students_network_can_differ_from_its_members(taught, tmp_path):
    data, artifacts, unlabeled, _ = taught
    other = tmp_path / "artifacts"
    shutil.copytree(artifacts, other)
    distill("tiny", data_dir=data, artifacts_dir=other, unlabeled=unlabeled, student="word", echo=lambda _: None,
            force=True, network="bigru", units=8, **STUDENT)
    folder = other / "tiny-word-student"
    recorded = read_json(folder / "bundle.json")["training"]["params"]
    assert (recorded["cell"], recorded["bidirectional"], recorded["units"]) == ("gru", True, 8)
    member = read_json(artifacts / "tiny-word" / "bundle.json")["training"]["params"]
    assert (member["cell"], member["bidirectional"]) == ("lstm", False)
    # the network is a bidirectional GRU of 8 units, and its ONNX graph predicts like it
    keras_bundle = load_bundle(folder, runtime="keras")
    recurrent = [layer for layer in keras_bundle.network.model.layers if type(layer).__name__ == "Bidirectional"]
    assert [(type(layer.forward_layer).__name__, layer.forward_layer.units) for layer in recurrent] == [("GRU", 8)]
    texts = ["정말 재밌어요 최고의 영화", "시간 아깝다", ""]
    assert load_bundle(folder).predict_proba(texts) == pytest.approx(keras_bundle.predict_proba(texts), abs=1e-5)
    with pytest.raises(ParameterError, match="network"):
        distill("tiny", data_dir=data, artifacts_dir=other, unlabeled=unlabeled, network="transformer",
                echo=lambda _: None)


STUDENT_IN_A_FRESH_PROCESS = """
from pathlib import Path
import pytest
from tests.helpers import register_tiny
from pipeline.stages.distill import distill
register_tiny(pytest.MonkeyPatch(), Path({mirror!r}))
distill("tiny", data_dir={data!r}, artifacts_dir={artifacts!r}, unlabeled={unlabeled!r}, student="word",
        echo=lambda _: None, force=True, epochs=1, soft_weight=1.0)
print("distilled")
"""


def test_tensorflows_start_up_log_stays_off_stderr_when_distill_trains(taught, tmp_path):
    # labelling loads no TensorFlow, so the student's training is where it is first imported
    data, artifacts, unlabeled, _ = taught
    shutil.copytree(data, tmp_path / "data")
    shutil.copytree(artifacts, tmp_path / "artifacts")
    code = STUDENT_IN_A_FRESH_PROCESS.format(mirror=str(data.parent / "mirror"), data=str(tmp_path / "data"),
                                             artifacts=str(tmp_path / "artifacts"), unlabeled=str(unlabeled))
    done = python(code, {"KSENT_VERBOSE": None, "TF_CPP_MIN_LOG_LEVEL": None})
    assert done.returncode == 0 and done.stdout.endswith("distilled\n"), done.stderr
    assert done.stderr == ""


def test_one_trained_bundle_can_teach_its_corpus_unlabeled_reviews(taught, tmp_path, monkeypatch):
    # self-training, as for a model adapted with --init-from on few labels: the char bundle labels the reviews
    data, artifacts, unlabeled, _ = taught
    own = tmp_path / "artifacts"
    shutil.copytree(artifacts, own)
    kwargs = {"data_dir": data, "artifacts_dir": own, "unlabeled": unlabeled, "echo": lambda _: None, **STUDENT}
    distill("tiny", teacher="char", **kwargs)
    folder = own / "tiny-char-student"          # the student's tokenization is the teacher's
    manifest = read_json(folder / "bundle.json")
    assert manifest["distillation"]["teacher"] == "tiny-char"
    assert manifest["distillation"]["teacher_bundle_sha256"] == sha256_file(own / "tiny-char" / "bundle.json")
    assert read_json(folder / "distill.manifest.json")["params"]["teacher"] == "char"
    assert _test_accuracy(folder) > 0.8
    assert distill("tiny", teacher="char", **kwargs).skipped
    # the ensemble's students keep the parameters they had before --teacher existed
    distill("tiny", student="word", **kwargs)
    assert "teacher" not in read_json(own / "tiny-word-student" / "distill.manifest.json")["params"]
    # a retrained teacher re-makes the student
    train("tiny", "char", data_dir=data, artifacts_dir=own, echo=lambda _: None, **{**SMALL, "seed": 7})
    assert not distill("tiny", teacher="char", **kwargs).skipped

    # it is that bundle's probabilities the student learns: the char bundle saying the opposite teaches it so
    real = Bundle.predict_ids

    def contrary(self, *args, **kwargs):
        p = real(self, *args, **kwargs)
        return 1 - p if self.directory.name == "tiny-char" else p

    monkeypatch.setattr(Bundle, "predict_ids", contrary)
    shutil.rmtree(own / "cache")            # the real teacher's labels: this one differs in memory only
    distill("tiny", teacher="char", force=True, **{**kwargs, "soft_weight": 5.0, "threshold": 0.5})
    monkeypatch.undo()
    assert _test_accuracy(folder) < 0.3


def test_a_teacher_must_be_a_trained_bundle_of_the_corpus(taught, tmp_path):
    data, artifacts, unlabeled, _ = taught
    kwargs = {"data_dir": data, "unlabeled": unlabeled, "echo": lambda _: None}
    with pytest.raises(MissingInputError, match="ksent run --corpus tiny --tokenizer char"):
        distill("tiny", artifacts_dir=tmp_path, teacher="char", **kwargs)
    with pytest.raises(MissingInputError, match="ksent run --corpus tiny --tokenizer morpheme --backend mecab`"):
        distill("tiny", artifacts_dir=tmp_path, teacher="morpheme-mecab", **kwargs)
    with pytest.raises(ParameterError, match="is a student"):
        distill("tiny", artifacts_dir=artifacts, teacher="word-student", **kwargs)
    with pytest.raises(ParameterError, match="teacher must be"):
        distill("tiny", artifacts_dir=artifacts, teacher="../tiny-char", **kwargs)


def test_auto_takes_a_morpheme_student_before_a_better_member_of_another_tokenization(tmp_path):
    from pipeline.core.files import write_json
    from pipeline.stages.distill import student_tok

    def teacher(val: dict) -> None:
        write_json(tmp_path / "tiny-ensemble" / "bundle.json", {
            "kind": "ensemble", "members": [{"name": f"tiny-{tok}", "tok": tok} for tok in val],
            "training": {"member_val_accuracy": {f"tiny-{tok}": v for tok, v in val.items()}}})

    (tmp_path / "tiny-ensemble").mkdir()
    teacher({"char": 0.8554, "morpheme-mecab": 0.8529, "word": 0.7743})
    assert student_tok("tiny", "auto", tmp_path) == "morpheme-mecab"
    teacher({"char": 0.8554, "morpheme-mecab": 0.8529, "morpheme-okt": 0.8540})
    assert student_tok("tiny", "auto", tmp_path) == "morpheme-okt"       # the best of the morpheme members
    teacher({"char": 0.8554, "word": 0.8601})
    assert student_tok("tiny", "auto", tmp_path) == "word"               # no morpheme member: the best one
    assert student_tok("tiny", "char", tmp_path) == "char"
    assert student_tok("tiny", "auto", tmp_path, teacher="char") == "char"
