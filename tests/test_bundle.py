"""pipeline.predict.bundle: loading checks, predict/predict_proba, default_model_dir, and no train/serve skew."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pandas as pd
import pytest

from pipeline.core.files import read_json, sha256_file
from pipeline.errors import PipelineError
from pipeline.predict.loading import load_bundle
from pipeline.predict.predictor import MAX_CHARS
from pipeline.predict.selection import default_model_dir
from tests.helpers import ksent, write_processed

# Keras 3.15 on numpy 2 warns from inside fit/predict; nothing in ksent can act on it
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

@pytest.fixture
def bundle_copy(evaluated, tmp_path):
    """A copy of the bundle folder the test may damage."""
    return shutil.copytree(evaluated[0], tmp_path / evaluated[0].name)


def test_predict_proba_equals_the_evaluated_probabilities(evaluated):
    """No train/serve skew: raw text through the saved Preprocessor + model gives evaluate's numbers."""
    bundle_dir, _ = evaluated
    evaluated_rows = pd.read_csv(bundle_dir / "predictions.csv", dtype={"id": str, "text": str},
                                 keep_default_na=False)
    bundle = load_bundle(bundle_dir)
    served = bundle.predict_proba(evaluated_rows["text"].tolist(), batch_size=16)
    assert served.shape == (len(evaluated_rows),)
    np.testing.assert_allclose(served, evaluated_rows["probability"], atol=1e-6)
    # one at a time (other batch composition and padding width) too
    for i in (0, len(evaluated_rows) - 1):
        assert bundle.predict_proba([evaluated_rows["text"][i]])[0] == pytest.approx(
            evaluated_rows["probability"][i], abs=1e-6)


def test_predict_records_and_bad_input(evaluated):
    bundle = load_bundle(evaluated[0])
    texts = ["정말 재밌어요 최고의 영화", "", "   ", "🙂🙂🙂", "Great movie!", "최악이다 " * 50_000, "뷁뷁 궳궳"]
    records = bundle.predict(texts)
    assert [r["text"] for r in records] == texts
    for r in records:
        assert set(r) == {"text", "label", "sentiment", "probability", "empty", "unknown"}
        assert 0.0 <= r["probability"] <= 1.0
        assert r["label"] == int(r["probability"] >= bundle.threshold)
        assert r["sentiment"] == ("positive" if r["label"] else "negative")
    assert [r["empty"] for r in records] == [False, True, True, True, True, False, False]
    # no token the model knows: the empty reviews, and one of words it never saw
    assert [r["unknown"] for r in records] == [False, True, True, True, True, False, True]
    # every empty sequence gets the same answer: the model's response to no tokens
    assert len({r["probability"] for r in records if r["empty"]}) == 1
    # a long text is capped, keeping the end that truncation keeps, and classified like its tail
    assert len(texts[-2]) > MAX_CHARS
    assert records[-2]["probability"] == pytest.approx(bundle.predict_proba(["최악이다 " * 20])[0], abs=1e-6)
    assert bundle.predict([]) == [] and bundle.predict_proba([]).shape == (0,)


def test_load_bundle_refuses_missing_files(bundle_copy):
    for name in ("model.onnx", "tokenizer.json", "bundle.json"):
        damaged = shutil.copytree(bundle_copy, bundle_copy.with_name(f"without-{name}"))
        (damaged / name).unlink()
        with pytest.raises(PipelineError, match=f"missing {name}"):
            load_bundle(damaged)
    # model.keras is what the Keras runtime needs; the ONNX runtime does without it
    damaged = shutil.copytree(bundle_copy, bundle_copy.with_name("without-model.keras"))
    (damaged / "model.keras").unlink()
    assert load_bundle(damaged).runtime == "onnxruntime"
    with pytest.raises(PipelineError, match="missing model.keras"):
        load_bundle(damaged, runtime="keras")
    with pytest.raises(PipelineError, match="no model bundle"):
        load_bundle(bundle_copy / "nowhere")


@pytest.mark.parametrize(("name", "runtime"), [("model.keras", "keras"), ("model.onnx", "auto")])
def test_load_bundle_refuses_a_corrupt_model(bundle_copy, name, runtime):
    model = bundle_copy / name
    model.write_bytes(model.read_bytes()[: model.stat().st_size // 2])       # truncated, e.g. a partial copy
    with pytest.raises(PipelineError, match=f"{name} is corrupt"):
        load_bundle(bundle_copy, runtime=runtime)
    # even when bundle.json is made to agree, an unreadable model is reported as such
    manifest = read_json(bundle_copy / "bundle.json")
    manifest["model" if name == "model.keras" else "onnx"]["sha256"] = sha256_file(model)
    (bundle_copy / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(PipelineError, match="cannot be loaded"):
        load_bundle(bundle_copy, runtime=runtime)


def test_a_bundle_without_an_int8_network_says_why(bundle_copy):
    # what export_onnx records for a graph it could not quantize (a GRU, an ONNX Loop)
    manifest = read_json(bundle_copy / "bundle.json")
    manifest["onnx"]["int8"] = {"note": "no int8 graph for an ONNX Loop"}
    (bundle_copy / "bundle.json").write_text(json.dumps(manifest))
    (bundle_copy / "model.int8.onnx").unlink(missing_ok=True)
    with pytest.raises(PipelineError, match="no int8 network .no int8 graph for an ONNX Loop. - use --runtime onnx"):
        load_bundle(bundle_copy, runtime="onnx-int8")
    assert load_bundle(bundle_copy).runtime == "onnxruntime"


def test_load_bundle_refuses_a_corrupt_manifest(bundle_copy):
    (bundle_copy / "bundle.json").write_text('{"format": "ksent-bundle", ')
    with pytest.raises(PipelineError, match="bundle.json is corrupt"):
        load_bundle(bundle_copy)
    (bundle_copy / "bundle.json").write_text('{"format": "ksent-bundle", "format_version": 99}')
    with pytest.raises(PipelineError, match="format version 99"):
        load_bundle(bundle_copy)


def test_load_bundle_refuses_another_models_tokenizer(bundle_copy, tmp_path):
    other = write_processed(tmp_path / "other", sizes=(200, 20, 20), seed=7)    # another vocabulary
    shutil.copyfile(other / "tokenizer.json", bundle_copy / "tokenizer.json")
    with pytest.raises(PipelineError, match="tokenizer.json does not belong to this model"):
        load_bundle(bundle_copy)
    # the same check holds if someone also "fixes" the checksum: the fingerprint or vocabulary differs
    manifest = read_json(bundle_copy / "bundle.json")
    manifest["tokenizer"]["sha256"] = sha256_file(bundle_copy / "tokenizer.json")
    (bundle_copy / "bundle.json").write_text(json.dumps(manifest))
    with pytest.raises(PipelineError, match="does not belong to this model"):
        load_bundle(bundle_copy)


def _fake_bundle(folder, corpus: str, val_accuracy: float, test_accuracy: float) -> None:
    folder.mkdir(parents=True)
    (folder / "bundle.json").write_text(json.dumps({"format": "ksent-bundle", "corpus": corpus}))
    (folder / "train.manifest.json").write_text(json.dumps({"counts": {"best_val_accuracy": val_accuracy}}))
    (folder / "metrics.json").write_text(json.dumps({"accuracy": test_accuracy}))


def test_default_model_dir_prefers_nsmc_by_validation_accuracy(tmp_path):
    with pytest.raises(PipelineError, match="make all CORPORA=nsmc MIRROR=../shared/corpora"):
        default_model_dir(tmp_path)
    _fake_bundle(tmp_path / "shop-word", "shop", 0.95, 0.95)
    assert default_model_dir(tmp_path) == tmp_path / "shop-word"                 # any bundle, if no NSMC one
    _fake_bundle(tmp_path / "nsmc-word", "nsmc", 0.84, 0.90)
    _fake_bundle(tmp_path / "nsmc-morpheme-mecab", "nsmc", 0.87, 0.85)
    assert default_model_dir(tmp_path) == tmp_path / "nsmc-morpheme-mecab"       # validation, not test


def test_load_bundle_refuses_names_and_sizes_that_reach_outside(bundle_copy, tmp_path):
    manifest_path = bundle_copy / "bundle.json"
    manifest = json.loads(manifest_path.read_text())
    if "onnx" in manifest:                          # a network file named by a path, checksum edited to match
        outside = tmp_path / "outside.onnx"
        shutil.copy(bundle_copy / "model.onnx", outside)
        damaged = {**manifest, "onnx": {**manifest["onnx"], "file": str(outside)}}
        manifest_path.write_text(json.dumps(damaged))
        with pytest.raises(PipelineError, match="not a file of the bundle folder"):
            load_bundle(bundle_copy)
        manifest_path.write_text(json.dumps({**manifest, "onnx": {**manifest["onnx"], "file": "../outside.onnx"}}))
        with pytest.raises(PipelineError, match="not a file of the bundle folder"):
            load_bundle(bundle_copy)
    # a tokenizer.json with an absurd maxlen (made self-consistent): refused, not 8 GB per text
    tokenizer = json.loads((bundle_copy / "tokenizer.json").read_text())
    tokenizer["maxlen"] = 2_000_000_000
    from pipeline.text.preprocess import Preprocessor
    with pytest.raises(PipelineError, match="maxlen 2000000000, not an integer from 1 to 10,000"):
        Preprocessor.from_dict(tokenizer)


def _onnx_with_embedding(path, rows: int) -> None:
    """A stand-in network: mean of a (rows, 1) embedding over the ids, through a sigmoid."""
    import onnx
    from onnx import TensorProto, helper

    weights = helper.make_tensor("emb", TensorProto.FLOAT, [rows, 1], [0.1] * rows)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["emb", "ids"], ["vectors"]),
         helper.make_node("ReduceMean", ["vectors"], ["mean"], axes=[1, 2], keepdims=0),
         helper.make_node("Sigmoid", ["mean"], ["p"])],
        "stand_in", [helper.make_tensor_value_info("ids", TensorProto.INT32, [None, None])],
        [helper.make_tensor_value_info("p", TensorProto.FLOAT, [None])], [weights])
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


def test_an_onnx_network_of_another_vocabulary_is_refused(bundle_copy):
    manifest = json.loads((bundle_copy / "bundle.json").read_text())
    assert "onnx" in manifest
    rows = manifest["tokenizer"]["vocab_size"]
    for other in (rows + 7, rows - 1):          # another bundle's network; bundle.json's checksum edited to match
        _onnx_with_embedding(bundle_copy / "model.onnx", other)
        manifest["onnx"]["sha256"] = sha256_file(bundle_copy / "model.onnx")
        (bundle_copy / "bundle.json").write_text(json.dumps(manifest))
        with pytest.raises(PipelineError, match=f"its embedding does not have the {rows:,} rows"):
            load_bundle(bundle_copy)
    _onnx_with_embedding(bundle_copy / "model.onnx", rows)       # the right size loads (the probe is not the cause)
    manifest["onnx"]["sha256"] = sha256_file(bundle_copy / "model.onnx")
    (bundle_copy / "bundle.json").write_text(json.dumps(manifest))
    assert load_bundle(bundle_copy).predict_proba(["좋아요"]).shape == (1,)


def test_a_network_that_answers_nan_is_an_error_not_a_probability(bundle_copy):
    """A damaged output layer (NaN bias), bundle.json's checksum edited to match: `--json` never prints NaN."""
    import onnx
    from onnx import numpy_helper

    from tests.helpers import ksent

    model = onnx.load(str(bundle_copy / "model.onnx"))
    for tensor in model.graph.initializer:
        if tensor.data_type == onnx.TensorProto.FLOAT and list(tensor.dims) == [1]:   # the output bias
            values = numpy_helper.to_array(tensor).copy()
            values[...] = np.nan
            tensor.CopyFrom(numpy_helper.from_array(values, tensor.name))
    onnx.save(model, str(bundle_copy / "model.onnx"))
    manifest = json.loads((bundle_copy / "bundle.json").read_text())
    manifest["onnx"]["sha256"] = sha256_file(bundle_copy / "model.onnx")
    (bundle_copy / "bundle.json").write_text(json.dumps(manifest))
    run = ksent("predict", "--model", str(bundle_copy), "--runtime", "onnx", "--json", "좋아요")
    assert run.returncode == 1, run.stderr.decode()
    assert "probability that is not a number" in run.stderr.decode() and "Traceback" not in run.stderr.decode()
    assert b"NaN" not in run.stdout


def test_plain_predict_marks_a_review_with_no_known_token(evaluated):
    result = ksent("predict", "--model", str(evaluated[0]), "정말 재밌어요 최고의 영화", "뷁뷁 궳궳", "good game")
    assert result.returncode == 0, result.stderr.decode()
    known, unknown, latin = result.stdout.decode().splitlines()
    assert known.count("\t") == 2 and not known.endswith("(no known token)")
    assert unknown.endswith("\t뷁뷁 궳궳\t(no known token)") and latin.endswith("\tgood game\t(no known token)")
