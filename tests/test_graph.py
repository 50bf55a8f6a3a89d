"""The stage graph (pipeline.graph): the order derived from the inputs each stage declares, `ksent run`
and `ksent status` for every stage, download and ensemble included."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline import graph
from pipeline.apps.cli import cli
from pipeline.core.stage import Input, Stage, Target
from pipeline.errors import ParameterError, PipelineError
from pipeline.predict.loading import load_bundle
from pipeline.stages import pad, split
from pipeline.text.segment import Segmenter
from tests.helpers import SMALL_MODEL

PIPELINE = ["download", "clean", "dedupe", "split", "tokenize", "pretrain", "pad", "train", "evaluate", "ensemble",
            "distill", "router", "student", "domains", "report"]


def test_the_order_comes_from_the_declared_inputs(tmp_path, tiny_corpus):
    assert list(graph.REGISTRY) == sorted(graph.REGISTRY)      # registered by name: no order written down
    target = Target("tiny", Segmenter("word"), data_dir=tmp_path / "data", artifacts_dir=tmp_path / "artifacts")
    plans, problems = graph.plan(target, graph.names())
    assert list(problems) == ["ensemble", "router", "student"]
    assert "at least 2 trained bundles" in str(problems["ensemble"])
    assert all("bundles of at least 2 corpora" in str(problems[name]) for name in ("router", "student"))
    assert graph.order({**plans, **dict.fromkeys(problems)}) == PIPELINE
    assert graph.upstream(plans["pretrain"]) == {"tokenize", "split", "clean"}
    assert graph.upstream(plans["evaluate"]) == {"train", "pad"}
    # pad reads the pretrain stage's vectors only when it adds pretrained words to the vocabulary
    assert "pretrain" in graph.upstream(plans["pad"])
    assert "pretrain" not in graph.upstream(pad.plan("tiny", "word", data_dir=tmp_path / "data", pretrained_words=0))


def test_a_cycle_is_refused():
    a = Stage("clean", "x", Path("a"), {"x": Input(Path("b/x"), "dedupe")}, {}, ())
    b = Stage("dedupe", "x", Path("b"), {"x": Input(Path("a/x"), "clean")}, {}, ())
    with pytest.raises(PipelineError, match="cycle among clean, dedupe"):
        graph.order({"clean": a, "dedupe": b})


def _status(*args: str) -> dict[str, dict]:
    result = CliRunner().invoke(cli, ["status", "--corpus", "tiny", "--tokenizer", "word", "--json", *args])
    assert result.exit_code == 0, result.output
    rows = [json.loads(line) for line in result.output.splitlines()]
    rows = [row for row in rows if row["tokenizer"] == "word"]       # the corpus's other tokenizations follow
    assert [row["stage"] for row in rows] == PIPELINE
    return {row["stage"]: row for row in rows}


def test_status_reports_every_stage_and_what_a_change_re_runs(tmp_path, tiny_corpus):
    data, artifacts = tmp_path / "data", tmp_path / "artifacts"
    dirs = ["--data-dir", str(data), "--artifacts-dir", str(artifacts)]
    before = _status(*dirs)
    assert {name: row["state"] for name, row in before.items()} == {
        **dict.fromkeys(PIPELINE, "missing"), "ensemble": "blocked", "router": "blocked", "student": "blocked"}
    assert before["download"]["command"] == "ksent download --corpus tiny"
    assert before["ensemble"]["command"] == "ksent ensemble --corpus tiny"

    run = CliRunner().invoke(cli, ["run", "--corpus", "tiny", "--tokenizer", "word", "--mirror", str(tiny_corpus),
                                   *dirs, *SMALL_MODEL])
    assert run.exit_code == 0, run.output
    # status compares with the default parameters: `ksent run` trained a smaller network (and pretrained
    # 16-d vectors for it), so pretrain and train are stale against the defaults, and what follows them
    after = _status(*dirs)
    assert after["pretrain"]["reasons"] == ["parameter dim: 16 -> 128"]
    assert after["pad"]["state"] == "stale" and after["pad"]["reasons"] == ["re-runs after pretrain"]
    assert "parameter epochs: 3 -> 8" in after["train"]["reasons"]
    assert after["train"]["reasons"][-1] == "re-runs after pad, pretrain"
    assert after["evaluate"]["reasons"][-1] == "re-runs after pad, train"
    assert after["domains"]["reasons"][-1] == "re-runs after train"         # the bundle it scores
    assert after["report"]["reasons"][-1] == "re-runs after domains, evaluate"
    for name in PIPELINE[:PIPELINE.index("pretrain")]:
        assert after[name]["state"] == "up to date", after[name]
    assert after["ensemble"]["state"] == "blocked"

    # an upstream change: the split re-made with another seed re-runs everything that reads it, and only that
    split.split("tiny", data_dir=data, seed=7, echo=lambda _: None)
    changed = _status(*dirs)
    assert changed["split"]["state"] == "stale" and changed["split"]["reasons"] == ["parameter seed: 7 -> 42"]
    assert changed["tokenize"]["state"] == "up to date"                  # reads dedupe's table, not the split
    assert "re-runs after split" in changed["pretrain"]["reasons"]
    assert all(changed[name]["state"] == "stale" for name in ("pretrain", "pad", "train", "evaluate", "domains",
                                                                     "report"))


def test_run_checks_every_parameter_before_the_first_stage(tmp_path, tiny_corpus):
    target = Target("tiny", Segmenter("word"), data_dir=tmp_path / "data", artifacts_dir=tmp_path / "artifacts",
                    mirror=str(tiny_corpus), train_params={"dropout": float("nan")})
    with pytest.raises(ParameterError, match="train: dropout must be between 0 and 0.95"):
        graph.run(target, echo=lambda _: None)
    assert not (tmp_path / "data").exists()                    # not even downloaded


def _ksent_in(tmp_path):
    """`ksent ARGS` (in this process) with tmp_path's data and artifacts folders: its output, checked to exit 0."""
    dirs = ["--data-dir", str(tmp_path / "data"), "--artifacts-dir", str(tmp_path / "artifacts")]

    def run(*args):
        result = CliRunner().invoke(cli, [*args, *dirs])
        assert result.exit_code == 0, result.output
        return result.output
    return run, dirs


def _stages(output: str) -> list[str]:
    return [line.split(" ")[0].rstrip(":") for line in output.splitlines() if line.split(" ")[0]]


def test_run_keeps_an_existing_ensemble_up_to_date_with_its_members(tmp_path, tiny_corpus):
    run, dirs = _ksent_in(tmp_path)

    for tok in ("word", "char"):
        run("run", "--corpus", "tiny", "--tokenizer", tok, "--mirror", str(tiny_corpus), *SMALL_MODEL)
    run("ensemble", "--corpus", "tiny")
    made = (tmp_path / "artifacts" / "tiny-ensemble" / "bundle.json").read_bytes()
    # a member retrained: `ksent run` re-makes the ensemble after it, and the report after that
    output = run("run", "--corpus", "tiny", "--tokenizer", "word", *SMALL_MODEL, "--seed", "7")
    stages = _stages(output)
    assert stages.index("ensemble") > stages.index("evaluate") and stages[-1] == "report"
    assert "ensemble tiny: test accuracy" in output
    assert (tmp_path / "artifacts" / "tiny-ensemble" / "bundle.json").read_bytes() != made
    ensemble = _status(*dirs)["ensemble"]          # its inputs are the members it was made from ...
    assert not [reason for reason in ensemble["reasons"] if not reason.startswith("re-runs after")]
    load_bundle(tmp_path / "artifacts" / "tiny-ensemble").predict(["좋아요"])    # ... so it loads


def test_deferred_shared_stages_run_once_in_ksent_domains(tmp_path, tiny_corpus):
    """`make all` leaves the router, domains and report to one `ksent domains` after its last bundle."""
    run, _ = _ksent_in(tmp_path)

    def stages_of(*args):
        return _stages(run(*args))

    for tok in ("word", "char"):
        ran = stages_of("run", "--corpus", "tiny", "--tokenizer", tok, "--mirror", str(tiny_corpus), *SMALL_MODEL,
                        "--defer-shared")
        assert ran[-1] == "evaluate" and not {"domains", "report"} & set(ran), ran
    assert stages_of("ensemble", "--corpus", "tiny", "--defer-shared") == ["ensemble"]
    assert not (tmp_path / "artifacts" / "REPORT.md").exists()
    assert stages_of("domains") == ["domains", "report"]        # one corpus: no router, no student
    report = (tmp_path / "artifacts" / "REPORT.md").read_text(encoding="utf-8")
    assert all(f"| tiny | {tok} |" in report for tok in ("word", "char", "ensemble"))


def test_run_until_a_stage_runs_only_it_and_what_it_reads(tmp_path, tiny_corpus):
    dirs = ["--data-dir", str(tmp_path / "data"), "--artifacts-dir", str(tmp_path / "artifacts")]
    runner = CliRunner()
    upto = runner.invoke(cli, ["run", "--corpus", "tiny", "--tokenizer", "word", "--mirror", str(tiny_corpus),
                               "--until", "pretrain", *dirs, *SMALL_MODEL])
    assert upto.exit_code == 0, upto.output
    ran = [line.split(" ")[0].rstrip(":") for line in upto.output.splitlines() if line and not line.startswith(" ")]
    assert ran == PIPELINE[:PIPELINE.index("pretrain") + 1]
    assert {name: row["state"] for name, row in _status(*dirs).items() if row["state"] != "blocked"} == {
        **dict.fromkeys(PIPELINE[:PIPELINE.index("pretrain")], "up to date"), "pretrain": "stale",  # 16-d vectors
        **dict.fromkeys(["pad", "train", "evaluate", "distill", "domains", "report"], "missing")}
    # the rest of the run picks up from there: what --until made is up to date, not made again
    rest = runner.invoke(cli, ["run", "--corpus", "tiny", "--tokenizer", "word", *dirs, *SMALL_MODEL])
    assert rest.exit_code == 0, rest.output
    assert "pretrain tiny/word: up to date, skipped" in rest.output and "train tiny/word: best val_acc" in rest.output

    unknown = runner.invoke(cli, ["run", "--corpus", "tiny", "--tokenizer", "word", "--until", "ensemble", *dirs])
    assert unknown.exit_code != 0 and "--until: ensemble is not one of its stages" in unknown.output
    assert "Traceback" not in unknown.output


def test_a_build_says_where_it_is_as_a_whole(tmp_path, tiny_corpus, monkeypatch):
    """`make all`: `ksent plan` counts what the build will run, and each stage run says n of N, with an estimate of
    what is left once the stages have run before."""
    run, _ = _ksent_in(tmp_path)
    progress = tmp_path / "progress.json"
    build = ["--corpus", "tiny", "--tokenizer", "word"]
    planned = run("plan", *build, "--progress-file", str(progress)).splitlines()
    assert planned[0] == "plan: 11 stages to run"               # one tokenization, one corpus: no ensemble, router
    assert [line.strip() for line in planned[1:]] == [f"{stage} tiny" + ("/word" if stage in PIPELINE[4:9] else "")
                                                      for stage in PIPELINE[:9]] + ["domains", "report"]
    monkeypatch.setenv("KSENT_BUILD_PROGRESS", str(progress))
    lines = [line for line in run("run", *build, "--mirror", str(tiny_corpus), *SMALL_MODEL).splitlines()
             if line.startswith("[")]
    assert [line.split(" (")[0] for line in lines] == [f"[{n}/11] {what.strip()}" for n, what in
                                                       enumerate(planned[1:], 1)]
    assert "since make all began)" in lines[0] and "left" not in lines[0]          # nothing ran before

    again = run("plan", *build, "--force", "--progress-file", str(progress)).splitlines()
    assert again[0].startswith("plan: 11 stages to run; 11 ran before, in ")
    state = json.loads(progress.read_text(encoding="utf-8"))
    assert state["lanes"] == {f"{stage} tiny/word": "word" for stage in PIPELINE[4:9]} and state["jobs"] == 1
    lines = [line for line in run("run", *build, "--force", "--mirror", str(tiny_corpus), *SMALL_MODEL).splitlines()
             if line.startswith("[")]
    assert lines[0].startswith("[1/11] download tiny") and "left by the recorded times of 11 of 11 stages" in lines[0]
    assert lines[-1].startswith("[11/11] report") and "of 1 of 1 stages" in lines[-1]


def test_the_estimate_of_what_is_left_runs_lanes_side_by_side():
    """A tokenization's stages (a lane) run one after another, `jobs` lanes at a time; the rest one by one."""
    from pipeline.core.build_progress import time_left

    seconds = {"dedupe c": 10, "pretrain c/char": 100, "train c/char": 600, "train c/morpheme": 300,
               "train c/word": 200, "router": 50}
    lanes = {"pretrain c/char": "char", "train c/char": "char", "train c/morpheme": "morpheme",
             "train c/word": "word"}
    assert time_left(seconds, lanes, jobs=1) == 1260                        # everything one after another
    assert time_left(seconds, lanes, jobs=2) == 60 + 700                    # char alone; morpheme, then word
    assert time_left(seconds, lanes, jobs=3) == 60 + 700
    assert time_left(seconds, {}, jobs=2) == 1260                           # a plan of before lanes: summed
    assert time_left({}, lanes, jobs=2) == 0


def test_a_damaged_progress_file_never_stops_a_stage(tmp_path, monkeypatch):
    from pipeline.core import build_progress

    progress = tmp_path / "progress.json"
    monkeypatch.setenv(build_progress.ENV, str(progress))
    for damaged in ('{"started": 1, "planned": []}', "not json", '[]'):
        progress.write_text(damaged, encoding="utf-8")
        assert build_progress.stage_started("train tiny/word") is None
        build_progress.stage_done("train tiny/word", 1.0)
        assert progress.read_text(encoding="utf-8") == damaged
