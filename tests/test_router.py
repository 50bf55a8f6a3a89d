"""The router: each corpus's best bundle as its expert, a gate over corpora; scored by the domains stage and
chosen as the default model on the validation splits of all corpora."""
from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from pipeline import corpora
from pipeline.core.files import read_json
from pipeline.core.stage import adopt_outputs
from pipeline.errors import ParameterError, PipelineError
from pipeline.predict.loading import load_bundle
from pipeline.predict.router import RouterBundle, at_threshold
from pipeline.predict.selection import default_model_dir
from pipeline.stages.domains import domains
from pipeline.stages.router import plan as router_plan, router
from tests.helpers import ksent, mark_retrained, threads_spin, write_split

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
QUIET = {"echo": lambda line: None}


@pytest.fixture
def two_corpora(evaluated, tmp_path, monkeypatch):
    """Bundles of two corpora ("tiny", and "shop": a copy declared as another corpus) and their splits."""
    import dataclasses

    bundle_src, _ = evaluated
    nsmc = corpora.CORPORA["nsmc"]
    for name in ("tiny", "shop"):
        monkeypatch.setitem(corpora.CORPORA, name, dataclasses.replace(nsmc, name=name))
    artifacts, data = tmp_path / "artifacts", tmp_path / "data"
    shutil.copytree(bundle_src, artifacts / bundle_src.name)
    write_split(data, "tiny", 1, n=80)
    with pytest.raises(ParameterError, match="bundles of at least 2 corpora"):
        router_plan(data_dir=data, artifacts_dir=artifacts)
    shop = shutil.copytree(bundle_src, artifacts / "shop-word")
    manifest = read_json(shop / "bundle.json")
    manifest["corpus"] = "shop"
    (shop / "bundle.json").write_text(json.dumps(manifest), encoding="utf-8")
    outputs = list(read_json(shop / "train.manifest.json")["outputs"])
    adopt_outputs("train", "shop/word", shop, outputs)            # vouch for the edited bundle.json
    shop_test = write_split(data, "shop", 2, n=80, suffix=" 배송 빠르고 포장 꼼꼼")
    return data, artifacts, shop_test, bundle_src.name


def test_the_router_mixes_its_experts_by_the_gate_and_becomes_the_default_on_validation(two_corpora):
    data, artifacts, shop_test, tiny = two_corpora
    # before the router exists the domains stage scores the bundles there are (as in the `ksent run` that trains
    # the second corpus's first bundle: the router could not be planned when that run started)
    assert domains(data_dir=data, artifacts_dir=artifacts, **QUIET).counts["scored"] == 4   # 2 bundles x 2 corpora
    result = router(data_dir=data, artifacts_dir=artifacts, **QUIET)
    assert result.counts["experts"] == {"shop": "shop-word", "tiny": tiny}
    routed = load_bundle(artifacts / "router")
    assert isinstance(routed, RouterBundle) and routed.gate.domains == ("shop", "tiny")
    texts = shop_test["raw"].tolist()[:20] + ["정말 재밌어요 최고의 영화", ""]
    gate = routed.gate.proba(texts)
    assert np.allclose(gate.sum(axis=1), 1.0)
    assert gate[:20, 0].mean() > 0.5                                  # shopping texts lean to the shop expert
    expected = sum(gate[:, k] * load_bundle(artifacts / name).predict_proba(texts)
                   for k, name in enumerate(("shop-word", tiny)))
    np.testing.assert_allclose(routed.predict_proba(texts), expected, atol=1e-6)
    sleeping = load_bundle(artifacts / "router", sleeping_threads=True)       # as `ksent predict --file` loads it
    assert threads_spin(routed) == [True, True] and threads_spin(sleeping) == [False, False]
    np.testing.assert_array_equal(sleeping.predict_proba(texts), routed.predict_proba(texts))
    # texts known to come from a corpus (the student's labelling with --routing origin): that corpus's expert alone
    known = routed.finish(texts, {}, 32, domain="shop")
    expert = load_bundle(artifacts / "shop-word")
    np.testing.assert_allclose([r["probability"] for r in known],
                               at_threshold(expert.predict_proba(texts), expert.threshold), atol=1e-6)
    records = routed.predict(texts[:2], explain=True)
    assert [e["domain"] for e in records[0]["explanation"]["experts"]] == ["shop", "tiny"]

    assert domains(data_dir=data, artifacts_dir=artifacts, **QUIET).counts == {"scored": 2, "reused": 4,
                                                                              "passed_over": []}
    cells = read_json(artifacts / "domains.json")["bundles"]
    assert set(cells) == {"router", "shop-word", tiny}
    means = {name: np.mean([b["cells"][c]["val"]["accuracy"] for c in ("shop", "tiny")]) for name, b in cells.items()}
    best = max(means, key=lambda name: (means[name], name))
    assert default_model_dir(artifacts) == artifacts / best

    run = ksent("predict", "--model", str(artifacts / "router"), "--explain", "배송 빠르고 좋아요")
    assert run.returncode == 0 and "gate weight" in run.stdout.decode()

    # an expert retrained since: the router refuses to load, and the default passes over it with a note
    mark_retrained(artifacts / "shop-word")
    with pytest.raises(PipelineError, match="its expert shop-word changed since the router was made"):
        load_bundle(artifacts / "router")
    notes: list[str] = []
    assert default_model_dir(artifacts, notes) != artifacts / "router"
    assert any("router is out of date" in note and "ksent router" in note for note in notes)
