"""router: one model for reviews of every declared corpus, artifacts/router/.

Each corpus's expert is its bundle with the best validation accuracy (normally its ensemble);
a gate (pipeline.model.gate) learns from the corpora's train splits which corpus a review is
like, and the router bundle answers P(positive) = sum over corpora of P(corpus | text) times
that corpus's expert's P(positive) (pipeline.predict.router). Nothing is fitted on a validation
or test split, so the domains stage's validation cells are honest estimates, and the default
model is chosen on them (pipeline.predict.selection).

Needs trained bundles of at least two corpora. Outputs: bundle.json (kind "router": the
experts with their bundle.json checksums, the gate's file and checksum), gate.npz.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from pipeline import layout
from pipeline.core.files import read_json, sha256_file, write_json
from pipeline.core.stage import Input, Stage, StageResult, Staging, Target, library_versions, run_stage
from pipeline.core.tables import read_split_texts
from pipeline.errors import ParameterError
from pipeline.stages import bundle_producer, router_experts

FOLDER = "router"
GATE_FILE = "gate.npz"
SEED = 42


def plan(*, data_dir: Path | str = layout.DATA_DIR, artifacts_dir: Path | str = layout.ARTIFACTS_DIR) -> Stage:
    chosen = router_experts(artifacts_dir, data_dir)
    if len(chosen) < 2:
        raise ParameterError(f"router: needs trained bundles of at least 2 corpora, found "
                             f"{', '.join(chosen) or 'none'} (e.g. `make all CORPORA=\"nsmc naver_shopping_sample\"`)")
    inputs = {}
    for corpus, directory in chosen.items():
        inputs[f"{directory.name}/{layout.BUNDLE_FILE}"] = Input(directory / layout.BUNDLE_FILE,
                                                                 bundle_producer(directory), label=directory.name)
        inputs[f"{corpus}/{layout.SPLIT_FILE}"] = Input(layout.split_path(data_dir, corpus), "split", label=corpus)
    return Stage("router", "", Path(artifacts_dir) / FOLDER, inputs=inputs,
                 params={"experts": {c: d.name for c, d in chosen.items()}, "seed": SEED},
                 outputs=(layout.BUNDLE_FILE, GATE_FILE))


def plan_for(t: Target) -> Stage:
    return plan(data_dir=t.data_dir, artifacts_dir=t.artifacts_dir)


def run_for(t: Target, **kwargs) -> StageResult:
    return router(data_dir=t.data_dir, artifacts_dir=t.artifacts_dir, **kwargs)


def router(*, data_dir: Path | str = layout.DATA_DIR, artifacts_dir: Path | str = layout.ARTIFACTS_DIR,
           force: bool = False, echo: Callable[[str], None] | None = None) -> StageResult:
    """Fit the gate on the corpora's train splits and write the router bundle."""
    from pipeline.model.gate import DomainGate
    from pipeline.predict.bundle import FORMAT, FORMAT_VERSION

    stage = plan(data_dir=data_dir, artifacts_dir=artifacts_dir)
    chosen = stage.params["experts"]

    def run(out: Staging) -> StageResult:
        texts = {corpus: read_split_texts(stage.inputs[f"{corpus}/{layout.SPLIT_FILE}"].path, corpus,
                                          ("train",))["train"][0] for corpus in chosen}
        started = time.perf_counter()
        gate = DomainGate.fit(texts, seed=SEED)
        gate.save(out.path(GATE_FILE))
        manifest = {
            "format": FORMAT, "format_version": FORMAT_VERSION, "kind": "router", "corpus": "+".join(chosen),
            "tok": "router", "created_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "experts": [{"domain": corpus, "name": name,
                         "tok": read_json(Path(artifacts_dir) / name / layout.BUNDLE_FILE).get("tok"),
                         "bundle_sha256": sha256_file(Path(artifacts_dir) / name / layout.BUNDLE_FILE)}
                        for corpus, name in chosen.items()],
            # each expert's probability is moved to its own threshold before mixing (pipeline.predict.router)
            "threshold": {"value": 0.5, "rule": "experts"},
            "gate": {"file": GATE_FILE, "sha256": sha256_file(out.path(GATE_FILE)), "domains": list(gate.domains),
                     "train_reviews": {c: len(t) for c, t in texts.items()}},
            "versions": library_versions(),
        }
        write_json(out.path(layout.BUNDLE_FILE), manifest)
        seconds = time.perf_counter() - started
        return StageResult(summary=f"router: experts {', '.join(f'{c} -> {n}' for c, n in chosen.items())}; gate "
                                   f"fitted on {sum(map(len, texts.values())):,} train reviews in {seconds:.1f} s",
                           counts={"experts": chosen, "gate_train_reviews": {c: len(t) for c, t in texts.items()}})

    return run_stage(stage, run, force=force, echo=echo)
