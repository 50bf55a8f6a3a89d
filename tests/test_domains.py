"""The domains stage: every bundle scored on every corpus's test split, cells reused while unchanged,
and REPORT.md's matrix."""
from __future__ import annotations

import dataclasses
import shutil

import pytest

from pipeline import corpora
from pipeline.core.files import read_json
from pipeline.predict.loading import load_bundle
from pipeline.stages.domains import domains
from pipeline.stages.report import report
from tests.helpers import write_split

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
QUIET = {"echo": lambda line: None}


def test_every_bundle_is_scored_on_every_test_split_and_unchanged_cells_are_reused(evaluated, tmp_path,
                                                                                    monkeypatch):
    bundle_src, _ = evaluated
    nsmc = corpora.CORPORA["nsmc"]
    # "other" has no bundles of its own: scored only because it is declared as an extra domain; "tried" is a
    # corpus run up to its split and never trained: not scored at all
    for name, extra in (("tiny", False), ("other", True), ("tried", False)):
        monkeypatch.setitem(corpora.CORPORA, name, dataclasses.replace(nsmc, name=name, extra_domain=extra))
    artifacts, data = tmp_path / "artifacts", tmp_path / "data"
    bundle_dir = shutil.copytree(bundle_src, artifacts / bundle_src.name)
    tests = {"tiny": write_split(data, "tiny", 1), "other": write_split(data, "other", 2)}
    write_split(data, "tried", 5)

    first = domains(data_dir=data, artifacts_dir=artifacts, **QUIET)
    assert first.counts == {"scored": 2, "reused": 0, "passed_over": []}
    written = read_json(artifacts / "domains.json")
    assert written["corpora"] == ["tiny"] and written["extra_domains"] == ["other"]
    cells = written["bundles"][bundle_dir.name]["cells"]
    assert set(cells) == {"tiny", "other"}
    bundle = load_bundle(bundle_dir)
    for corpus, test in tests.items():
        expected = float(((bundle.predict_proba(test["raw"].tolist()) >= bundle.threshold) == test["label"]).mean())
        got = cells[corpus]["test"]
        assert got["accuracy"] == pytest.approx(expected, abs=1e-6) and got["n"] == len(test)
        assert 0 <= cells[corpus]["val"]["accuracy"] <= 1

    assert domains(data_dir=data, artifacts_dir=artifacts, **QUIET).skipped
    write_split(data, "other", 3)                                   # one corpus's split changes
    again = domains(data_dir=data, artifacts_dir=artifacts, **QUIET)
    assert again.counts == {"scored": 1, "reused": 1, "passed_over": []}

    report(artifacts_dir=artifacts, **QUIET)
    from pipeline.reporting import summary_lines  # how `make all` ends

    lines = summary_lines(artifacts)
    metrics = read_json(bundle_dir / "metrics.json")
    assert lines[0].split() == ["model", "test", "acc.", "balanced", "val.", "acc.", "training"]
    assert lines[1].split()[:4] == [bundle_dir.name, f"{metrics['accuracy']:.4f}",
                                    f"{metrics['balanced_accuracy']:.4f}", f"{metrics['val_accuracy']:.4f}"]
    assert lines[-2] == f"default model (ksent predict without --model): {bundle_dir.name}"
    text = (artifacts / "REPORT.md").read_text(encoding="utf-8")
    assert "## Every model on every domain" in text and "| other (extra) test (15) |" in text
    row = next(line for line in text.splitlines() if line.startswith(f"| {bundle_dir.name} "))
    new = read_json(artifacts / "domains.json")["bundles"][bundle_dir.name]["cells"]
    mean_val = new["tiny"]["val"]["accuracy"]         # the extra domain is scored, not averaged
    # speed: the reviews/s measured on the largest test split (here both hold 15 rows: the first by name)
    largest = max((new[c]["test"] for c in ("other", "tiny")), key=lambda t: t["n"])
    rate = largest["n"] / largest["seconds"]
    assert row == (f"| {bundle_dir.name} (default) | **{new['tiny']['test']['accuracy']:.4f}** | "  # in-domain bold
                   f"{new['other']['test']['accuracy']:.4f} | {mean_val:.4f} | {rate:,.0f} |")
    # `--model`'s help lists it with the accuracy the default is chosen on (one corpus of its own: its
    # validation accuracy at its threshold) and that speed
    from pipeline.predict.selection import model_menu

    assert model_menu(artifacts) == [f"{bundle_dir.name} (val {metrics['val_accuracy']:.4f}, {rate:,.0f} reviews/s)"]


def test_evaluate_on_another_corpus_prints_its_validation_and_test_accuracy(evaluated, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from pipeline.apps.cli import cli

    bundle_src, artifacts_src = evaluated
    root = shutil.copytree(artifacts_src.parent, tmp_path / "root")
    for name in ("tiny", "other"):
        monkeypatch.setitem(corpora.CORPORA, name, dataclasses.replace(corpora.CORPORA["nsmc"], name=name))
    test = write_split(root / "data", "other", 4)
    tok = bundle_src.name.removeprefix("tiny-")
    options = ["--tokenizer", tok.split("-")[0], *(["--backend", "mecab"] if "mecab" in tok else [])]
    result = CliRunner().invoke(cli, ["evaluate", "--corpus", "tiny", *options, "--data-dir", str(root / "data"),
                                      "--artifacts-dir", str(root / "artifacts"), "--on", "other"])
    assert result.exit_code == 0, result.output
    bundle = load_bundle(root / "artifacts" / bundle_src.name)
    accuracy = float(((bundle.predict_proba(test["raw"].tolist()) >= bundle.threshold) == test["label"]).mean())
    assert f"evaluate tiny/{tok} on other: val accuracy " in result.output
    assert f"test accuracy {accuracy:.4f} on {len(test):,} rows" in result.output
    missing = CliRunner().invoke(cli, ["evaluate", "--corpus", "tiny", *options, "--data-dir", str(root / "data"),
                                       "--artifacts-dir", str(root / "artifacts"), "--on", "nsmc"])
    assert missing.exit_code == 1 and "run `ksent run --corpus nsmc`" in missing.output


def test_one_damaged_bundle_folder_is_passed_over_not_fatal(evaluated, tmp_path, monkeypatch):
    bundle_src, _ = evaluated
    monkeypatch.setitem(corpora.CORPORA, "tiny", dataclasses.replace(corpora.CORPORA["nsmc"], name="tiny"))
    artifacts, data = tmp_path / "artifacts", tmp_path / "data"
    shutil.copytree(bundle_src, artifacts / bundle_src.name)
    damaged = shutil.copytree(bundle_src, artifacts / "tiny-copy")
    (damaged / "bundle.json").write_text((damaged / "bundle.json").read_text()[:-20])      # cut short
    write_split(data, "tiny", 1)
    lines: list[str] = []
    result = domains(data_dir=data, artifacts_dir=artifacts, echo=lines.append)
    assert result.counts["scored"] == 1 and result.counts["passed_over"] == ["tiny-copy"]
    assert "passed over tiny-copy: " in lines[-1] and "tiny-copy/bundle.json is not the file" in lines[-1]
    assert list(read_json(artifacts / "domains.json")["bundles"]) == [bundle_src.name]
