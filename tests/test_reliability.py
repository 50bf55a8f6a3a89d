"""The stage contract under faults: killed and concurrent runs, damaged inputs, bad options, full disks.

Kills happen through the test hook KSENT_TEST_KILL_AFTER_RENAME=N (_bootstrap): the stage's
process SIGKILLs itself right after its N-th rename, so every step of a commit is hit in turn.
"""
from __future__ import annotations

import errno
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from pipeline.apps.cli import cli
from pipeline.core.files import read_json, sha256_file
from pipeline.core.locks import folder_lock
from pipeline.core.stage import Input, Stage, verify_inputs
from pipeline.errors import PipelineError
from pipeline.stages import dedupe as dedupe_stage
from pipeline.stages.clean import clean
from pipeline.stages.dedupe import dedupe
from pipeline.stages.download import download
from pipeline.stages.pad import pad
from pipeline.stages.pretrain import pretrain
from pipeline.stages.split import split
from pipeline.stages.tokenize import tokenize
from pipeline.text.segment import Segmenter
from tests.helpers import REPO, ksent, register_tiny, write_nsmc_file

QUIET = {"echo": lambda _: None}


def _prepare(data: Path, mirror: Path, upto: str = "pad") -> None:
    """Run the data stages on the tiny corpus, with default parameters, up to and including `upto`."""
    download("tiny", data_dir=data, mirror=str(mirror), **QUIET)
    steps = [("clean", lambda: clean("tiny", data_dir=data, **QUIET)),
             ("dedupe", lambda: dedupe("tiny", data_dir=data, **QUIET)),
             ("split", lambda: split("tiny", data_dir=data, **QUIET)),
             ("tokenize", lambda: tokenize("tiny", Segmenter("word"), data_dir=data, **QUIET)),
             ("pretrain", lambda: pretrain("tiny", "word", data_dir=data, dim=8, **QUIET)),
             ("pad", lambda: pad("tiny", "word", data_dir=data, **QUIET))]
    for name, step in steps:
        step()
        if name == upto:
            return


def _ksent_env(args: list[str], mirror: Path, env: dict | None = None, **kwargs):
    """`ksent` in a subprocess that registers the tiny corpus first (the registry lives in the process)."""
    return subprocess.run([sys.executable, "-c", _bootstrap(mirror), *args], cwd=REPO, capture_output=True,
                          env={**os.environ, **(env or {})}, timeout=300, **kwargs)


# stage -> (its CLI arguments with non-default parameters, its output folder, its outputs)
FAULT_STAGES = {
    "clean": (["clean", "--corpus", "tiny", "--profile", "hangul-latin"], "interim/tiny",
              ["clean.parquet", "normalizer.json"]),
    "dedupe": (["dedupe", "--corpus", "tiny", "--leakage", "drop-train"], "interim/tiny", ["dedupe.parquet"]),
    "split": (["split", "--corpus", "tiny", "--seed", "7"], "interim/tiny", ["split.parquet", "split_report.json"]),
    "tokenize": (["tokenize", "--corpus", "tiny", "--tokenizer", "word", "--stopwords", "{stopwords}"],
                 "processed/tiny/word", ["tokens.parquet", "segmenter.json"]),
    "pad": (["pad", "--corpus", "tiny", "--tokenizer", "word", "--min-freq", "5"], "processed/tiny/word",
            ["train.parquet", "val.parquet", "test.parquet", "tokenizer.json", "vocab_report.json", "lengths.png"]),
}


def _bytes(folder: Path, names: list[str]) -> dict[str, bytes]:
    return {name: (folder / name).read_bytes() for name in names if (folder / name).is_file()}


@pytest.mark.parametrize("stage", list(FAULT_STAGES))
def test_killed_at_every_rename_leaves_old_or_new_set_and_rerun_is_identical(stage, tmp_path, tiny_corpus):
    args, sub, outputs = FAULT_STAGES[stage]
    stopwords = tmp_path / "stop.txt"
    stopwords.write_text("진짜\n그냥\n", encoding="utf-8")
    args = [a.replace("{stopwords}", str(stopwords)) for a in args]
    base = tmp_path / "base"
    _prepare(base / "data", tiny_corpus)
    old = _bytes(base / "data" / sub, outputs)
    # the uninterrupted run with the new parameters: the reference
    ref = tmp_path / "ref"
    shutil.copytree(base, ref)
    done = _ksent_env([*args, "--data-dir", str(ref / "data")], tiny_corpus)
    assert done.returncode == 0, done.stderr.decode()
    new = _bytes(ref / "data" / sub, outputs)
    assert new != old

    kills = 0
    for n in range(1, 60):
        work = tmp_path / f"kill{n}"
        shutil.copytree(base, work)
        run = _ksent_env([*args, "--data-dir", str(work / "data")], tiny_corpus, env={KILL_AFTER_RENAME_ENV: str(n)})
        if run.returncode == 0:
            break
        assert run.returncode == -signal.SIGKILL, run.stderr.decode()
        kills += 1
        folder = work / "data" / sub
        # what any later stage sees: the whole old set or the whole new one (a half commit is finished first)
        reader = Stage("reader", "tiny", tmp_path / "elsewhere", params={}, outputs=(),
                       inputs={name: Input(folder / name, stage) for name in outputs})
        verify_inputs(reader)
        seen = _bytes(folder, outputs)
        assert seen in (old, new), f"kill after rename {n}: a mix of two runs"
        # re-running finishes the job: byte-identical to the uninterrupted run, no leftovers
        # (the same command in this process: only the killed run needs a process of its own)
        again = CliRunner().invoke(cli, [*args, "--data-dir", str(work / "data")])
        assert again.exit_code == 0, again.output
        assert _bytes(folder, outputs) == new
        leftovers = [p.name for p in folder.iterdir() if p.name.startswith(".")]
        assert leftovers == [], leftovers
        shutil.rmtree(work)
    assert kills >= 3, "the kill hook never fired: the test tested nothing"


def test_train_killed_or_failing_keeps_the_previous_bundle(tmp_path, tiny_corpus):
    from pipeline.predict.loading import load_bundle
    from pipeline.stages.train import train

    data, artifacts = tmp_path / "data", tmp_path / "artifacts"
    _prepare(data, tiny_corpus)
    small = {"epochs": 2, "embedding_dim": 8, "units": 8, "batch_size": 64, "embeddings": "random"}
    train("tiny", "word", data_dir=data, artifacts_dir=artifacts, **small, **QUIET)
    bundle_dir = artifacts / "tiny-word"
    texts = ["정말 재밌어요", "시간 아깝다"]
    before = load_bundle(bundle_dir).predict_proba(texts)
    files_before = sorted(p.name for p in bundle_dir.iterdir())

    # a run that fails after training (here: an error while saving) publishes nothing
    import pipeline.model.training as training_module
    original = training_module.write_history

    def broken(*args, **kwargs):
        raise RuntimeError("disk trouble")
    training_module.write_history = broken
    try:
        with pytest.raises(RuntimeError):
            train("tiny", "word", data_dir=data, artifacts_dir=artifacts, force=True, **small, **QUIET)
    finally:
        training_module.write_history = original
    assert (load_bundle(bundle_dir).predict_proba(texts) == before).all()
    assert sorted(p.name for p in bundle_dir.iterdir()) == files_before
    assert [p.name for p in artifacts.iterdir() if ".staging-" in p.name] == []

    # killed after each rename: the bundle folder is the old one or the new one, whole
    args = ["train", "--corpus", "tiny", "--tokenizer", "word", "--data-dir", str(data), "--artifacts-dir",
            str(artifacts), "--epochs", "1", "--embedding-dim", "8", "--units", "8", "--embeddings", "random",
            "--force"]
    for n in range(1, 10):
        run = _ksent_env(args, tiny_corpus, env={KILL_AFTER_RENAME_ENV: str(n)})
        bundle = load_bundle(bundle_dir)                       # loads: never half a bundle
        epochs = bundle.manifest["training"]["epochs_run"]
        if run.returncode == 0:
            assert epochs == 1 and n > 2, "the kill hook never fired before the swap"
            break
        assert run.returncode == -signal.SIGKILL, run.stderr.decode()
        if epochs == 2:
            assert (bundle.predict_proba(texts) == before).all()
    else:
        pytest.fail("train never finished")
    assert [p.name for p in artifacts.iterdir() if ".staging-" in p.name or ".old-" in p.name] == []


def test_a_second_writer_waits_and_the_result_is_one_complete_run(tmp_path, tiny_corpus):
    data = tmp_path / "data"
    _prepare(data, tiny_corpus, upto="pretrain")
    folder = data / "processed" / "tiny" / "word"
    args = ["pad", "--corpus", "tiny", "--tokenizer", "word", "--data-dir", str(data)]
    with folder_lock(folder, "test"):
        waiting = subprocess.Popen([sys.executable, "-c", _bootstrap(tiny_corpus), *args, "--min-freq", "3"],
                                   cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 60
        while not (folder / "pad.manifest.json").exists() and time.monotonic() < deadline and waiting.poll() is None:
            time.sleep(0.2)
            if time.monotonic() > deadline - 55:            # it had 5 s to get past the lock: it did not
                break
        assert waiting.poll() is None and not (folder / "pad.manifest.json").exists()
    out, err = waiting.communicate(timeout=120)
    assert waiting.returncode == 0, err.decode()
    assert "waiting for pid" in (out + err).decode()

    # two runs with different parameters at once: the outputs are one run's, complete
    runs = [subprocess.Popen([sys.executable, "-c", _bootstrap(tiny_corpus), *args, "--min-freq", str(k)],
                             cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE) for k in (2, 4)]
    for run in runs:
        assert run.wait(timeout=120) == 0, run.stderr.read().decode()
    manifest = read_json(folder / "pad.manifest.json")
    assert manifest["params"]["min_freq"] in (2, 4)
    for name, digest in manifest["outputs"].items():
        assert sha256_file(folder / name) == digest, name
    report = read_json(folder / "vocab_report.json")
    assert report == {k: v for k, v in manifest["counts"].items() if k not in ("engine", "partitions")}


KILL_AFTER_RENAME_ENV = "KSENT_TEST_KILL_AFTER_RENAME"
# Installed in the subprocess: SIGKILL it right after the N-th rename that publishes a file or folder
# (pipeline.core.files.renamed, called by atomic writes and commits), N from KILL_AFTER_RENAME_ENV.
_KILL_HOOK = f"""
import os, signal
import pipeline.core.files
_renames = 0
def _renamed():
    global _renames
    _renames += 1
    if os.environ.get({KILL_AFTER_RENAME_ENV!r}) == str(_renames):
        os.kill(os.getpid(), signal.SIGKILL)
pipeline.core.files.renamed = _renamed
"""


def _bootstrap(mirror: Path) -> str:
    return (_KILL_HOOK + "import tests.helpers as c; from _pytest.monkeypatch import MonkeyPatch; "
            f"c.register_tiny(MonkeyPatch(), __import__('pathlib').Path({str(mirror)!r})); "
            "from pipeline.apps.cli import cli; cli(prog_name='ksent')")


# --- inputs verified where they are read ------------------------------------------------------------

def test_a_changed_mixed_or_foreign_input_is_refused_with_the_stage_to_rerun(tmp_path, tiny_corpus):
    data = tmp_path / "data"
    _prepare(data, tiny_corpus)
    interim = data / "interim" / "tiny"
    # a truncated table
    split_file = interim / "split.parquet"
    good = split_file.read_bytes()
    split_file.write_bytes(good[: len(good) // 2])
    with pytest.raises(PipelineError, match=r"split.parquet is not the file the split stage recorded.*ksent split "
                                            r"--corpus tiny"):
        pad("tiny", "word", data_dir=data, force=True, **QUIET)
    split_file.write_bytes(good)
    # a manifest that is not JSON
    (interim / "split.manifest.json").write_text("{", encoding="utf-8")
    with pytest.raises(PipelineError, match=r"split.manifest.json is unreadable.*ksent split --corpus tiny"):
        pad("tiny", "word", data_dir=data, force=True, **QUIET)


def test_raw_files_are_checked_against_the_pinned_checksums(tmp_path, tiny_corpus):
    data = tmp_path / "data"
    download("tiny", data_dir=data, mirror=str(tiny_corpus), **QUIET)
    raw = data / "raw" / "tiny" / "ratings_train.txt"
    text = raw.read_text(encoding="utf-8")
    flipped = text.replace("\t1\n", "\tX\n").replace("\t0\n", "\t1\n").replace("\tX\n", "\t0\n")   # labels flipped
    raw.write_text(flipped, encoding="utf-8")
    with pytest.raises(PipelineError, match=r"not the upstream file.*ksent download --corpus tiny --force"):
        clean("tiny", data_dir=data, **QUIET)
    assert not (data / "interim" / "tiny" / "clean.parquet").exists()


def test_invalid_utf8_rows_are_dropped_once_and_another_encoding_fails(tmp_path, tiny_corpus, monkeypatch):
    raw = tiny_corpus / "tiny" / "ratings_train.txt"
    lines = raw.read_bytes().split(b"\n")
    lines[5] = lines[5].replace(b"\t", b"\t\xff\xfe", 1)            # one line with invalid bytes
    raw.write_bytes(b"\n".join(lines))
    register_tiny(monkeypatch, tiny_corpus)
    data = tmp_path / "data"
    download("tiny", data_dir=data, mirror=str(tiny_corpus), **QUIET)
    result = clean("tiny", data_dir=data, **QUIET)
    assert result.counts["malformed"] == {"invalid UTF-8": 1}
    assert result.counts["rows_read"] == 300 + 100                       # every line counted once
    assert result.counts["rows_read_by_source"]["train"] == 299

    cp949 = tmp_path / "cp949"
    write_nsmc_file(cp949 / "tiny" / "ratings_train.txt", [("정말 재밌어요", 1), ("최악이다", 0)] * 20)
    (cp949 / "tiny" / "ratings_train.txt").write_bytes(
        (cp949 / "tiny" / "ratings_train.txt").read_text(encoding="utf-8").encode("cp949"))
    shutil.copy(tiny_corpus / "tiny" / "ratings_test.txt", cp949 / "tiny" / "ratings_test.txt")
    register_tiny(monkeypatch, cp949)
    other = tmp_path / "other"
    download("tiny", data_dir=other, mirror=str(cp949), **QUIET)
    with pytest.raises(PipelineError, match=r"is not UTF-8 .*iconv -f CP949"):
        clean("tiny", data_dir=other, **QUIET)


# --- environment faults ------------------------------------------------------------------------------

@pytest.mark.parametrize("code", [errno.ENOSPC, errno.EROFS])
def test_a_failed_write_keeps_the_previous_outputs_and_leaves_no_temp_files(tmp_path, tiny_corpus, monkeypatch,
                                                                            code):
    data = tmp_path / "data"
    _prepare(data, tiny_corpus, upto="dedupe")
    folder = data / "interim" / "tiny"
    before = _bytes(folder, ["dedupe.parquet", "dedupe.manifest.json"])

    def full(source, positions, target, corpus):
        Path(target).write_bytes(b"PAR1 partial")
        raise OSError(code, os.strerror(code), str(target))
    monkeypatch.setattr(dedupe_stage, "_write_rows", full)
    with pytest.raises(PipelineError, match=r"dedupe tiny: cannot write .*(no space left|read-only).*previous "
                                            r"outputs are kept"):
        dedupe("tiny", data_dir=data, conflicts="drop", **QUIET)
    assert _bytes(folder, ["dedupe.parquet", "dedupe.manifest.json"]) == before
    assert [p.name for p in folder.iterdir() if p.name.startswith(".")] == []


def test_leftovers_of_a_killed_run_are_removed_by_the_next_run(tmp_path, tiny_corpus):
    data = tmp_path / "data"
    _prepare(data, tiny_corpus, upto="dedupe")
    folder = data / "interim" / "tiny"
    (folder / ".dedupe.parquet.abc123.part").write_bytes(b"half")
    (folder / ".split.staging-xyz").mkdir()
    (folder / ".split.staging-xyz" / "split.parquet").write_bytes(b"half")
    split("tiny", data_dir=data, **QUIET)
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".")) == []


# --- options: every bad value is a message, never a traceback -----------------------------------------

BAD_OPTIONS = [
    ["download", "--corpus", "tiny", "--retries", "-1"], ["download", "--corpus", "tiny", "--timeout", "-1"],
    ["download", "--corpus", "tiny", "--timeout", "x"], ["download", "--corpus", "nope"],
    ["clean", "--corpus", "tiny", "--squeeze", "-2"], ["clean", "--corpus", "tiny", "--profile", "klingon"],
    ["dedupe", "--corpus", "tiny", "--conflicts", "all"], ["split", "--corpus", "tiny", "--val-ratio", "0"],
    ["split", "--corpus", "tiny", "--val-ratio", "0.0001"], ["split", "--corpus", "tiny", "--seed", "-5"],
    ["split", "--corpus", "tiny", "--val-ratio", "abc"], ["tokenize", "--corpus", "tiny", "--workers", "0"],
    ["tokenize", "--corpus", "tiny", "--tokenizer", "word", "--jamo"],
    ["tokenize", "--corpus", "tiny", "--option", "nonsense"],
    ["tokenize", "--corpus", "tiny", "--option", "frobnicate=1"],
    ["pad", "--corpus", "tiny", "--max-words", "1"], ["pad", "--corpus", "tiny", "--maxlen", "100000000"],
    ["pad", "--corpus", "tiny", "--maxlen", "-3"], ["pad", "--corpus", "tiny", "--coverage", "2"],
    ["pad", "--corpus", "tiny", "--min-freq", "0"], ["pad", "--corpus", "tiny", "--padding", "middle"],
    ["train", "--corpus", "tiny", "--epochs", "0"], ["train", "--corpus", "tiny", "--batch-size", "0"],
    ["train", "--corpus", "tiny", "--dropout", "1.5"], ["train", "--corpus", "tiny", "--units", "-1"],
    ["train", "--corpus", "tiny", "--learning-rate", "nan"], ["train", "--corpus", "tiny", "--layers", "100"],
    ["train", "--corpus", "tiny", "--lr-decay", "0"], ["train", "--corpus", "tiny", "--cell", "rnn"],
    ["train", "--corpus", "tiny", "--embedding-dim", "1.5"], ["evaluate", "--corpus", "tiny", "--tokenizer", "x"],
    ["run", "--corpus", "tiny", "--epochs", "-1"], ["predict", "--batch-size", "0", "x"],
    ["predict", "--model", "/nonexistent", "x"], ["predict", "--file", "/nonexistent"],
    ["status", "--corpus", "nope"], ["report", "--artifacts-dir", "/proc/forbidden"],
]


def test_bad_options_give_one_line_and_a_nonzero_exit_never_a_traceback(tmp_path, tiny_corpus):
    data = tmp_path / "data"
    _prepare(data, tiny_corpus, upto="dedupe")
    failures = []
    for i, args in enumerate(BAD_OPTIONS):
        args = [*args, *(["--data-dir", str(data)] if args[0] not in ("predict", "report") else [])]
        if i % 8 == 0:              # some through the real entry point in a process of its own
            result = _ksent_env(args, tiny_corpus)
            code, err, uncaught = result.returncode, result.stderr.decode(), None
        else:                       # the rest in this process: the same command, ~1 s less each
            result = CliRunner().invoke(cli, args)
            code, err = result.exit_code, result.stderr
            uncaught = None if isinstance(result.exception, SystemExit | None) else result.exception
        if code not in (1, 2) or "Traceback" in err or "Error" not in err or uncaught:
            failures.append((args, code, err[-300:], uncaught))
    assert failures == []


def test_a_damaged_bundle_json_is_a_message(tmp_path):
    from pipeline.predict.loading import load_bundle

    bundle = tmp_path / "b"
    bundle.mkdir()
    for name in ("model.keras", "tokenizer.json"):
        (bundle / name).write_text("{}", encoding="utf-8")
    for content in ("[1, 2]", '{"format": "ksent-bundle", "format_version": 1, "model": 3, "tokenizer": [],'
                               ' "corpus": "x", "tok": "y"}', "{"):
        (bundle / "bundle.json").write_text(content, encoding="utf-8")
        with pytest.raises(PipelineError, match="bundle.json"):
            load_bundle(bundle)
    result = ksent("predict", "--model", str(bundle), "hello")
    assert result.returncode == 1 and "Traceback" not in result.stderr.decode()


def test_what_ksent_writes_is_utf8_and_json_whatever_the_names_and_arguments(tmp_path, word_bundle):
    import json

    artifacts = tmp_path / "artifacts"
    shutil.copytree(word_bundle.parent, artifacts)
    # a folder whose name is not UTF-8 (the OS hands such bytes to Python as lone surrogates)
    os.rename(artifacts / word_bundle.name, os.fsencode(artifacts) + b"/tiny-\xff")
    summary = ksent("summary", "--artifacts-dir", str(artifacts))
    assert summary.returncode == 0, summary.stderr
    assert "tiny-\\udcff" in summary.stdout.decode("utf-8")          # shown escaped, strict UTF-8
    assert not (artifacts / "REPORT.md").exists()
    assert summary.stdout.decode().splitlines()[-1] == "details: `ksent report` writes REPORT.md"   # not a path
    report = ksent("report", "--artifacts-dir", str(artifacts))
    assert report.returncode == 0, report.stderr
    assert "tiny-\\udcff" in (artifacts / "REPORT.md").read_text(encoding="utf-8")

    # a review argument that is not UTF-8 is refused as stdin and files are, not classified as mojibake
    bundle = os.fsencode(artifacts) + b"/tiny-\xff"
    for as_json in ([], ["--json"]):
        result = subprocess.run([sys.executable, "-m", "pipeline", "predict", *as_json, "--model", bundle,
                                 "좋아요".encode() + b" \xff\xfe"], cwd=REPO, capture_output=True, timeout=300)
        assert result.returncode == 1 and result.stdout == b""
        assert "argument 1 is not valid UTF-8 (byte 10)" in result.stderr.decode("utf-8")
    good = subprocess.run([sys.executable, "-m", "pipeline", "predict", "--json", "--model", bundle, "좋아요"],
                          cwd=REPO, capture_output=True, timeout=300)
    assert good.returncode == 0 and json.loads(good.stdout.decode("utf-8"))["text"] == "좋아요"


def test_json_files_are_json_whatever_they_hold(tmp_path):
    import json

    from pipeline.core.files import write_json

    path = tmp_path / "x.json"
    write_json(path, {"loss": [0.5, float("nan"), float("inf")], "path": "a\udcffb", "n": 3})
    text = path.read_bytes().decode("utf-8")                          # strict: fails on a raw surrogate
    assert json.loads(text, parse_constant=lambda name: pytest.fail(f"{name} is not JSON")) == \
        {"loss": [0.5, None, None], "path": "a\udcffb", "n": 3}      # the \udcff escape reads back as written
