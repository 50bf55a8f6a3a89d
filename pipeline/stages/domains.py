"""domains: every bundle scored on every corpus's validation and test splits: REPORT.md's cross-domain
matrix, and the figures the default model is chosen on.

A model meets text from wherever a user brings it; this stage says how each bundle (each
tokenization and ensemble of each corpus) does on the other corpora's reviews. Each cell feeds a
corpus's raw test texts through `load_bundle(...).predict_proba`, the bundle's own saved
preprocessing, exactly as `ksent predict` would; the in-domain cell therefore repeats the evaluate
stage's figure (a check that there is no train/serve skew).

Each cell holds the bundle's accuracy on the corpus's validation split too: the default model is
chosen on those (pipeline.predict.selection), never on test figures.

Inputs: every bundle's bundle.json in the artifacts folder (the router's too, once made: its stage's
scope runs before this one's), and the split.parquet of every corpus that has bundles of its own or is
declared as an extra domain (`extra_domain = true`: scored, but left out of the default model's choice);
a corpus only declared or run up to its split is not scored, so it cannot change the default.
Output: artifacts/domains.json. A cell is computed once per (bundle.json, split.parquet) checksum pair:
cells of an unchanged bundle on an unchanged split are taken from the previous domains.json, so
re-running after one new bundle scores that bundle only.
"""
from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from pipeline import layout
from pipeline.core.files import read_json, sha256_file, write_json
from pipeline.core.progress import Progress
from pipeline.core.stage import Input, Stage, StageResult, Staging, Target, input_problem, run_stage
from pipeline.core.tables import read_split_texts
from pipeline.corpora import CORPORA
from pipeline.stages import bundle_producer

OUTPUT = layout.DOMAINS_FILE


SCORED = ("val", "test")


def _scanned(artifacts_dir: Path) -> tuple[list[Path], dict[str, str]]:
    """The bundles to score (evaluated, or a router), and those passed over because their bundle.json is not the
    one their stage recorded (damaged, edited, half-copied): name -> why. One damaged folder never stops the
    scoring of the others."""
    found, damaged = [], {}
    for path in layout.bundle_manifests(artifacts_dir):
        bundle = path.parent
        if not ((bundle / layout.METRICS_FILE).is_file() or (bundle / "router.manifest.json").is_file()):
            continue
        try:
            problem = input_problem(Input(path, bundle_producer(bundle), label=bundle.name), sha256_file(path))
        except OSError as exc:
            problem = f"{path} is unreadable ({exc.strerror or exc})"
        if problem:
            damaged[bundle.name] = problem
        else:
            found.append(bundle)
    return found, damaged


def _bundles(artifacts_dir: Path) -> list[Path]:
    return _scanned(artifacts_dir)[0]


def _domains(data_dir: Path, artifacts_dir: Path) -> tuple[dict[str, Path], list[str]]:
    """The corpora scored (name -> split.parquet): those with bundles of their own, and those declared as an extra
    domain (`extra_domain = true`); and the extra ones, which the default model's choice leaves out. A corpus
    only declared, checked or split - one tried and never trained - is neither."""
    own = set()
    for path in layout.bundle_manifests(artifacts_dir):
        try:
            own.add(read_json(path).get("corpus"))
        except (OSError, ValueError, AttributeError):
            continue
    splits, extra = {}, []
    for name, spec in CORPORA.items():
        path = layout.split_path(data_dir, name)
        if path.is_file() and (name in own or spec.extra_domain):
            splits[name] = path
            if name not in own:
                extra.append(name)
    return splits, extra


def _splits(data_dir: Path, artifacts_dir: Path) -> dict[str, Path]:
    return _domains(data_dir, artifacts_dir)[0]


def plan(*, data_dir: Path | str = layout.DATA_DIR, artifacts_dir: Path | str = layout.ARTIFACTS_DIR) -> Stage:
    folder = Path(artifacts_dir)
    inputs = {}
    for bundle in _bundles(folder):
        inputs[f"{bundle.name}/{layout.BUNDLE_FILE}"] = Input(bundle / layout.BUNDLE_FILE, bundle_producer(bundle),
                                                              label=bundle.name)
    for name, path in _splits(Path(data_dir), folder).items():
        inputs[f"{name}/{layout.SPLIT_FILE}"] = Input(path, "split", label=name)
    return Stage("domains", "", folder, inputs=inputs, params={}, outputs=(OUTPUT,))


def plan_for(t: Target) -> Stage:
    return plan(data_dir=t.data_dir, artifacts_dir=t.artifacts_dir)


def run_for(t: Target, **kwargs) -> StageResult:
    return domains(data_dir=t.data_dir, artifacts_dir=t.artifacts_dir, **kwargs)


def score(bundle, path: Path, corpus: str, rows: dict | None = None) -> dict:
    """A loaded bundle's accuracy on the validation and test splits of `corpus`'s split.parquet `path`
    (`rows` caches the splits' texts by path across calls), at the bundle's own decision threshold."""

    rows = {} if rows is None else rows
    if path not in rows:
        rows[path] = read_split_texts(path, corpus, SCORED)
    cell = {}
    for split, (texts, labels) in rows[path].items():
        if len(labels):
            started = time.perf_counter()
            predicted = (bundle.predict_proba(texts) >= bundle.threshold).astype(np.int8)
            seconds = time.perf_counter() - started      # preprocessing and network, in this process
            cell[split] = {"accuracy": round(float((predicted == labels).mean()), 6), "n": len(labels),
                           "seconds": round(seconds, 6)}
    return cell


def domains(*, data_dir: Path | str = layout.DATA_DIR, artifacts_dir: Path | str = layout.ARTIFACTS_DIR,
            force: bool = False, echo: Callable[[str], None] | None = None) -> StageResult:
    """Score every bundle in `artifacts_dir` on every corpus's test split into domains.json."""
    stage = plan(data_dir=data_dir, artifacts_dir=artifacts_dir)
    folder = stage.folder

    def run(out: Staging) -> StageResult:
        from pipeline.predict.loading import load_bundle

        try:
            previous = read_json(folder / OUTPUT)["bundles"] if not force else {}
        except (OSError, ValueError, KeyError, TypeError):
            previous = {}
        domains, extra = _domains(Path(data_dir), folder)
        splits = {name: (path, sha256_file(path)) for name, path in domains.items()}
        rows: dict = {}
        result, scored, reused = {}, 0, 0
        shown = Progress()
        for bundle_dir in _bundles(folder):
            bundle_sha = sha256_file(bundle_dir / layout.BUNDLE_FILE)
            old = previous.get(bundle_dir.name) or {}
            old_cells = old.get("cells", {}) if old.get("bundle_sha256") == bundle_sha else {}
            bundle = None
            cells = {}
            for corpus, (path, split_sha) in splits.items():
                cell = old_cells.get(corpus)
                if cell and cell.get("split_sha256") == split_sha and all(split in cell for split in SCORED):
                    cells[corpus], reused = cell, reused + 1
                    continue
                if bundle is None:
                    bundle = load_bundle(bundle_dir)
                started = time.perf_counter()
                cells[corpus] = {"split_sha256": split_sha, **score(bundle, path, corpus, rows)}
                scored += 1
                shown.line(f"  domains: {bundle_dir.name} on {corpus}: test accuracy "
                           f"{cells[corpus].get('test', {}).get('accuracy', float('nan')):.4f} "
                           f"({time.perf_counter() - started:.0f} s)")
            manifest = read_json(bundle_dir / layout.BUNDLE_FILE)
            result[bundle_dir.name] = {"corpus": manifest.get("corpus"), "tok": manifest.get("tok"),
                                       "bundle_sha256": bundle_sha, "cells": cells}
        shown.close()
        damaged = _scanned(folder)[1]
        write_json(out.path(OUTPUT), {"corpora": sorted(set(splits) - set(extra)), "extra_domains": sorted(extra),
                                          "bundles": result})
        passed_over = "".join(f"; passed over {name}: {why}" for name, why in damaged.items())
        return StageResult(summary=f"domains: {len(result)} bundle(s) x {len(splits)} test split(s): {scored} "
                                   f"scored, {reused} unchanged{passed_over}",
                           counts={"scored": scored, "reused": reused, "passed_over": sorted(damaged)})

    return run_stage(stage, run, force=force, echo=echo)
