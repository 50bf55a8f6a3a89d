"""A user's own corpus as a loop (issue: declarations are inputs): every edit of a declaration that changes
what a stage reads re-runs exactly the stages affected (`ksent status` says why), and the rebuild equals a
fresh build in an empty folder, byte for byte; an edit that changes nothing re-runs nothing."""
from __future__ import annotations

import csv
import filecmp
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline import corpora, graph
from pipeline.apps.cli import cli
from pipeline.core.stage import Target
from pipeline.reporting import summary_lines
from pipeline.text.normalize import Normalizer
from pipeline.text.segment import Segmenter
from tests.helpers import REPO, SMALL, SMALL_MODEL, synthetic_reviews
from tests.own_export import DECLARATION, export_rows, write_export

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")
QUIET = {"echo": lambda line: None}
SCORED = ("predictions.csv", "metrics.json")
PIPELINE = ["download", "clean", "dedupe", "split", "tokenize", "pretrain", "pad", "train", "evaluate"]


def _rows(seed: int) -> list[dict]:
    rows = export_rows(synthetic_reviews(500, seed), seed=seed)
    for i, row in enumerate(rows[:40]):           # quoted fields with commas and quotes, as exports have
        row["review"] += ', 그리고 "배송" 빨라요' if i % 2 else ","
    return rows


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """The user's files: an export, a second export, unlabeled reviews (read-only, shared by the tests)."""
    root = tmp_path_factory.mktemp("own-files")
    write_export(root / "export.csv", _rows(3))
    write_export(root / "export2.csv", _rows(4))
    lines = [text for text, _ in synthetic_reviews(600, seed=9)]
    (root / "unlabeled.txt").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return root


def declare(folder: Path, text: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "mine.toml").write_text(text, encoding="utf-8")
    corpora.reload()


@pytest.fixture
def own(files, tmp_path, monkeypatch):
    """Corpus "mine" declared from files/export.csv in tmp_path/decl (KSENT_CORPORA); returns its text."""
    monkeypatch.setenv("KSENT_CORPORA", str(tmp_path / "decl"))
    text = DECLARATION.format(path=(files / "export.csv").as_posix())
    declare(tmp_path / "decl", text)
    yield text
    corpora.reload()


def build(root: Path, toks=("word",), ensemble: bool = False) -> list:
    """`ksent run` of each tokenization (the test's small network), then the ensemble if asked."""
    results = []
    for tok in toks:
        results += graph.run(Target("mine", Segmenter(tok), data_dir=root / "data", artifacts_dir=root / "artifacts",
                                    train_params=SMALL), **QUIET)
    if ensemble:
        from pipeline.stages.ensemble import ensemble as make_ensemble

        results.append(make_ensemble("mine", data_dir=root / "data", artifacts_dir=root / "artifacts", **QUIET))
    return results


def assert_same_as_fresh(built: Path, fresh: Path, bundles=("mine-word",), names=SCORED) -> None:
    for bundle in bundles:
        for name in names:
            assert filecmp.cmp(built / "artifacts" / bundle / name, fresh / "artifacts" / bundle / name,
                               shallow=False), (bundle, name)


def status_reasons(root: Path, tok: str = "word") -> dict[str, list[str]]:
    rows = graph.status(Target("mine", Segmenter(tok), data_dir=root / "data", artifacts_dir=root / "artifacts",
                               train_params=SMALL))
    return {row.stage: row.reasons for row in rows if row.tok is None and row.state == "stale"}


# (the declaration edit, the stage that re-runs first, the reason `ksent status` gives)
EDITS = {
    "text": (lambda t, f: t.replace('text = "review"', 'text = "title"'), "clean", "declaration changed: text"),
    "id": (lambda t, f: t.replace('id = "review_id"\n', ""), "clean", "declaration changed: id"),
    "format": (lambda t, f: t.replace('type = "csv"', 'type = "csv"\nquoting = "none"'), "clean",
               "declaration changed: [format]"),
    "files": (lambda t, f: t.replace("export.csv", "export2.csv"), "download", "declaration changed: [[files]]"),
    "label": (lambda t, f: t.replace('column = "label"\npositive = [1]\nnegative = [0]',
                                     'column = "recommend"\npositive = [false]\nnegative = [true]'),
              "clean", "declaration changed: [label]"),
    "rating": (lambda t, f: t.replace('[label]\ncolumn = "label"\npositive = [1]\nnegative = [0]',
                                      '[rating]\ncolumn = "stars"\nmin = 1\nmax = 5\npositive_from = 4\n'
                                      'negative_to = 2'), "clean", "declaration changed: [rating]"),
    "split": (lambda t, f: t.replace("test_ratio = 0.2\nval_ratio = 0.1", "test_ratio = 0.15\nval_ratio = 0.15"),
              "split", "parameter test_ratio: 0.2 -> 0.15"),
    "unlabeled": (lambda t, f: t + f'\n[unlabeled]\npath = "{(f / "unlabeled.txt").as_posix()}"\n'
                                   f'format = {{ type = "lines" }}\n', "download",
                  "declaration changed: [unlabeled]"),
    "clean": (lambda t, f: t + '\n[clean]\nprofile = "hangul-latin"\n', "clean",
              'parameter profile: "hangul" -> "hangul-latin"'),
}


@pytest.fixture(scope="module")
def base(files, tmp_path_factory):
    """One build of the declaration as first written, copied by each edit's test."""
    root = tmp_path_factory.mktemp("own-base")
    old = os.environ.get("KSENT_CORPORA")
    os.environ["KSENT_CORPORA"] = str(root / "decl")
    try:
        declare(root / "decl", DECLARATION.format(path=(files / "export.csv").as_posix()))
        build(root)
    finally:
        os.environ.pop("KSENT_CORPORA") if old is None else os.environ.__setitem__("KSENT_CORPORA", old)
        corpora.reload()
    return root


@pytest.mark.parametrize("key", list(EDITS))
def test_a_declaration_edit_re_runs_what_it_changes_and_equals_a_fresh_build(key, own, files, base, tmp_path):
    edit, first, reason = EDITS[key]
    built = tmp_path / "built"
    for folder in ("data", "artifacts"):
        shutil.copytree(base / folder, built / folder)
    assert status_reasons(built) == {}
    declare(tmp_path / "decl", edit(own, files))
    reasons = status_reasons(built)
    assert reason in reasons[first], reasons
    assert not set(PIPELINE[:PIPELINE.index(first)]) & set(reasons), reasons       # nothing before it re-runs
    results = build(built)
    assert not next(r for r in results if r.summary.startswith(first)).skipped
    assert status_reasons(built) == {}
    fresh = tmp_path / "fresh"
    build(fresh)
    assert_same_as_fresh(built, fresh)


def test_a_description_edit_re_runs_nothing(own, files, base, tmp_path):
    built = tmp_path / "built"
    for folder in ("data", "artifacts"):
        shutil.copytree(base / folder, built / folder)
    declare(tmp_path / "decl", own.replace('description = "my own export"', 'description = "renamed"')
            .replace('text = "review"', '# a comment\ntext   =   "review"'))
    assert status_reasons(built) == {}
    assert all(result.skipped for result in build(built))


def test_a_split_change_re_makes_every_bundle_and_the_ensemble(own, files, tmp_path):
    built = tmp_path / "built"
    build(built, ("word", "char"), ensemble=True)
    declare(tmp_path / "decl", EDITS["split"][0](own, files))
    rows = graph.status(Target("mine", Segmenter("word"), data_dir=built / "data",
                               artifacts_dir=built / "artifacts", train_params=SMALL))
    # `ksent status` lists the other tokenization's stages too, and the ensemble after them
    assert {(row.stage, row.tok) for row in rows if row.state == "stale"} >= {
        ("split", None), ("train", None), ("pad", "char"), ("train", "char"), ("ensemble", None)}
    # before the rebuild, the summary marks every model of the corpus stale, saying why
    stale = graph.stale_models(built / "data", built / "artifacts")
    assert stale == dict.fromkeys(("mine-word", "mine-char"), "split: parameter test_ratio: 0.2 -> 0.15") | {
        "mine-ensemble": "member mine-char is stale; member mine-word is stale"}
    lines = summary_lines(built / "artifacts", stale)
    assert any(line.startswith("mine-ensemble (stale) ") for line in lines)
    assert "stale: mine-word: split: parameter test_ratio: 0.2 -> 0.15" in lines
    results = build(built, ("word",))              # one `ksent run`: word, then char, then the ensemble
    made = [r.summary.split(":")[0] for r in results if not r.skipped]
    assert made.index("train mine/word") < made.index("train mine/char") < made.index("ensemble mine")
    assert graph.stale_models(built / "data", built / "artifacts") == {}
    fresh = tmp_path / "fresh"
    build(fresh, ("word", "char"), ensemble=True)
    assert_same_as_fresh(built, fresh, ("mine-word", "mine-char", "mine-ensemble"))


def test_make_all_after_a_split_change_equals_a_fresh_make_all(own, files, tmp_path):
    env = {**os.environ, "KSENT_CORPORA": str(tmp_path / "decl")}
    env.pop("MAKEFLAGS", None)

    def make_all(root: Path, *args: str) -> subprocess.CompletedProcess:
        done = subprocess.run(["make", "-C", str(REPO), "all", "CORPORA=mine", "TOKENIZERS=word char",
                               f"VENV={Path(sys.executable).parent.parent}", f"DATA_DIR={root / 'data'}",
                               f"ARTIFACTS_DIR={root / 'artifacts'}", f"RUN_ARGS={' '.join(SMALL_MODEL)}", *args],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done

    make_all(tmp_path / "built")
    assert not (REPO / "data" / "raw" / "mine").exists()          # nothing of the user's lands in the clone
    declare(tmp_path / "decl", EDITS["split"][0](own, files))
    again = make_all(tmp_path / "built")
    assert "train mine/char: best val_acc" in again.stdout and "ensemble mine: test accuracy" in again.stdout
    # the two tokenizations' trainings ran side by side above (JOBS=2, one TensorFlow thread each); one after
    # another, with every thread, they make the same networks to the byte
    assert "== mine / word" in again.stdout and "== mine / char" in again.stdout
    make_all(tmp_path / "fresh", "JOBS=1")
    assert_same_as_fresh(tmp_path / "built", tmp_path / "fresh", ("mine-word", "mine-char", "mine-ensemble"))
    assert_same_as_fresh(tmp_path / "built", tmp_path / "fresh", ("mine-word", "mine-char"), ("model.onnx",))


def test_a_corpus_run_to_its_split_and_never_trained_does_not_change_the_default(own, files, tmp_path):
    root = tmp_path / "root"
    build(root, ("word", "char"))
    dirs = ["--data-dir", str(root / "data"), "--artifacts-dir", str(root / "artifacts")]

    def summary() -> list[str]:
        result = CliRunner().invoke(cli, ["summary", *dirs])
        assert result.exit_code == 0, result.output
        return result.output.splitlines()

    assert CliRunner().invoke(cli, ["domains", *dirs]).exit_code == 0
    before = summary()
    # a copy of the data declared to try something, run up to its split, never trained
    (tmp_path / "decl" / "tried.toml").write_text(own, encoding="utf-8")
    corpora.reload()
    graph.run(Target("tried", Segmenter("word"), data_dir=root / "data", artifacts_dir=root / "artifacts"),
              until="split", **QUIET)
    assert CliRunner().invoke(cli, ["domains", *dirs]).exit_code == 0
    assert summary() == before
    assert json.loads((root / "artifacts" / "domains.json").read_text())["corpora"] == ["mine"]


def _check(tmp_path: Path, text: str, *files: Path):
    declare(tmp_path / "decl", text)
    return CliRunner().invoke(cli, ["corpus", "check", "mine", *map(str, files)])


def test_corpus_check_previews_cleaning_and_validates_what_run_would(own, files, tmp_path):
    export = files / "export.csv"
    ok = _check(tmp_path, own, export)
    assert ok.exit_code == 0, ok.output
    rows = list(csv.DictReader(open(export, encoding="utf-8-sig", newline="")))
    latin = [r["review"] for r in rows if not re.search("[가-힣ㄱ-ㅎㅏ-ㅣ0-9]", r["review"])]   # Latin or emoji only
    assert latin and f"cleaning (profile hangul): {len(latin):,} usable rows would be empty and dropped" in ok.output
    kept = sum(1 for text in latin if Normalizer(profile="hangul-latin")(text))      # letters and punctuation
    assert 0 < kept < len(latin)
    assert f"profile hangul-latin would keep {kept:,} of them: [clean] profile = \"hangul-latin\"" in ok.output
    assert "can read these files" in ok.output
    # a single value where a list is expected is a one-element list
    assert _check(tmp_path, own.replace("positive = [1]", "positive = 1"), export).exit_code == 0
    # a label rule that names no value of its column: non-zero, naming the file and the values it holds
    flipped = own.replace('column = "label"', 'column = "recommend"')
    bad = _check(tmp_path, flipped, export)
    assert bad.exit_code == 1 and "mine.toml: no row is usable: column 'recommend' holds 'True', 'False'" in bad.output
    assert "e.g. positive = [true]" in bad.output and "Traceback" not in bad.output
    # ratios `run` would refuse: refused here, and by `corpus show`, naming the file and the key
    ratios = own.replace("test_ratio = 0.2\nval_ratio = 0.1", "test_ratio = 0.6\nval_ratio = 0.5")
    for command in (["corpus", "check", "mine", str(export)], ["corpus", "show", "mine"]):
        declare(tmp_path / "decl", ratios)
        refused = CliRunner().invoke(cli, command)
        assert refused.exit_code == 1 and "mine.toml: [split] val_ratio + test_ratio must be below 1" in refused.output
    # a split too small for both labels in each part: what the split stage would refuse
    head = tmp_path / "head.csv"
    head.write_text("".join(open(export, encoding="utf-8-sig").readlines()[:12]), encoding="utf-8")
    small = _check(tmp_path, own.replace("test_ratio = 0.2", "test_ratio = 0.05"), head)
    assert small.exit_code == 1 and "[split] test share 0.05 of" in small.output
    # [clean] values are checked like the clean stage's options
    wrong = _check(tmp_path, own + '\n[clean]\nprofile = "latin"\n', export)
    assert wrong.exit_code == 1 and "mine.toml: [clean] profile must be one of hangul, hangul-latin" in wrong.output


def test_a_new_export_of_a_local_file_is_taken_and_equals_a_fresh_build(own, files, tmp_path):
    mine = tmp_path / "mine"
    shutil.copytree(files, mine)
    declare(tmp_path / "decl", own.replace((files / "export.csv").as_posix(), (mine / "export.csv").as_posix()))
    built = tmp_path / "built"
    build(built)
    shutil.copyfile(files / "export2.csv", mine / "export.csv")            # the user exports again, same path
    assert status_reasons(built)["download"] == ["input export.csv (source) changed"]
    build(built)
    fresh = tmp_path / "fresh"
    build(fresh)
    assert_same_as_fresh(built, fresh)


def test_a_one_off_clean_option_says_what_ksent_run_will_use(own, base, tmp_path):
    built = tmp_path / "built"
    for folder in ("data", "artifacts"):
        shutil.copytree(base / folder, built / folder)
    result = CliRunner().invoke(cli, ["clean", "--corpus", "mine", "--profile", "hangul-latin", "--data-dir",
                                      str(built / "data")])
    assert result.exit_code == 0, result.output
    assert ('note: `ksent run` and `make all` use profile = "hangul" and will make this again with it; to keep '
            'profile = "hangul-latin", set it under [clean] in') in result.output
    assert "declaration" not in str(status_reasons(built).get("clean"))
    assert status_reasons(built)["clean"] == ['parameter profile: "hangul-latin" -> "hangul"']
