"""The data stages on the Dask engine: same bytes on 1 or 2 workers, on a separately started
scheduler, and after a worker is killed mid-stage.

The fixture corpus is small, so the tables are written in row groups (the engine's
partitions) of ROW_GROUP rows instead of 20,000: several partitions per stage.
"""
from __future__ import annotations

import concurrent.futures
import contextlib
import dataclasses
import gzip
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from pipeline.core import engine, tables
from pipeline.core.files import read_json, sha256_file
from pipeline.core.stage import StageResult, adopt_outputs
from pipeline.core.tables import ParquetRowGroupWriter
from pipeline.errors import PipelineError
from pipeline.stages import (
    clean as clean_stage,
    pad as pad_stage,
    pretrain as pretrain_stage,
    tokenize as tokenize_stage,
)
from pipeline.stages.clean import clean
from pipeline.stages.dedupe import dedupe
from pipeline.stages.download import download
from pipeline.stages.pad import pad
from pipeline.stages.pretrain import pretrain
from pipeline.stages.split import split
from pipeline.stages.tokenize import tokenize
from pipeline.text.segment import Segmenter
from tests.helpers import REPO, DieAtPartition, synthetic_reviews

pytest.importorskip("mecab", reason="python-mecab-ko is not installed")

ROW_GROUP = 40
MECAB = Segmenter("morpheme", backend="mecab")
QUIET = {"echo": lambda line: None}


@pytest.fixture
def small_partitions(monkeypatch):
    monkeypatch.setattr(tables, "ROW_GROUP_ROWS", ROW_GROUP)
    monkeypatch.setattr(pretrain_stage, "ROW_GROUP_ROWS", ROW_GROUP)
    monkeypatch.setattr(clean_stage, "BLOCK_BYTES", 1500)          # the raw files in several blocks
    monkeypatch.setattr(clean_stage, "LOCAL_BELOW", 2)             # and on the cluster however few
    monkeypatch.setattr(pad_stage, "LOCAL_BELOW", 2)


@pytest.fixture
def unlabeled(tmp_path) -> Path:
    path = tmp_path / "unlabeled.txt.gz"
    lines = [text for text, _ in synthetic_reviews(150, seed=9)] + ["", "영화 정말 재밌다 ㅋㅋㅋ"]
    path.write_bytes(gzip.compress("\n".join(lines).encode("utf-8"), mtime=0))
    return path


def _prepare(data: Path, mirror: Path, **where) -> StageResult:
    download("tiny", data_dir=data, mirror=str(mirror), **QUIET)
    cleaned = clean("tiny", data_dir=data, **where, **QUIET)
    dedupe("tiny", data_dir=data, **QUIET)
    split("tiny", data_dir=data, **QUIET)
    return cleaned


def _data_stages(data: Path, mirror: Path, unlabeled: Path, **where) -> dict:
    results = {"clean": _prepare(data, mirror, **where),
               "tokenize": tokenize("tiny", MECAB, data_dir=data, **where, **QUIET),
               "pretrain": pretrain("tiny", MECAB.name(), data_dir=data, unlabeled=str(unlabeled), **where, **QUIET)}
    results["pad"] = pad("tiny", MECAB.name(), data_dir=data, **where, **QUIET)
    return results


def _outputs(data: Path) -> dict[str, bytes]:
    """Every file the stages wrote, manifests as the output hashes they record (not their timings)."""
    files = {}
    for path in sorted(data.rglob("*")):
        if path.is_file() and "raw" not in path.parts:
            rel = str(path.relative_to(data))
            files[rel] = (repr(read_json(path)["outputs"]).encode() if path.name.endswith(".manifest.json")
                          else path.read_bytes())
    return files


def test_row_group_writer_gives_the_same_bytes_however_the_rows_are_chunked(tmp_path, monkeypatch):
    monkeypatch.setattr(tables, "ROW_GROUP_ROWS", 7)
    table = pa.table({"id": [str(i) for i in range(30)], "tokens": [["토큰"] * (i % 4) for i in range(30)]})
    written = []
    for chunks in ([30], [1, 29], [7, 7, 7, 9], [5] * 6, [13, 0, 17]):
        path = tmp_path / f"{len(written)}.parquet"
        with ParquetRowGroupWriter(path, table.schema) as writer:
            start = 0
            for n in chunks:
                writer.write(table.slice(start, n))
                start += n
        written.append(path.read_bytes())
        meta = pq.ParquetFile(path).metadata
        assert [meta.row_group(i).num_rows for i in range(meta.num_row_groups)] == [7, 7, 7, 7, 2]
    assert len(set(written)) == 1
    assert pq.read_table(tmp_path / "0.parquet").equals(table)


def test_data_stages_on_two_workers_match_one_process_byte_for_byte(tmp_path, tiny_corpus, unlabeled,
                                                                     small_partitions):
    one = _data_stages(tmp_path / "one", tiny_corpus, unlabeled, workers=1)
    two = _data_stages(tmp_path / "two", tiny_corpus, unlabeled, workers=2)
    assert one["tokenize"].counts["engine"] == "1 process"
    assert two["tokenize"].counts["engine"] == "2 Dask workers"
    assert {result.counts["engine"] for result in two.values()} == {"2 Dask workers"}
    assert {result.counts["engine"] for result in one.values()} == {"1 process"}
    assert two["tokenize"].counts["partitions"] > 2 and two["clean"].counts["partitions"] > 4  # really partitioned
    assert pq.ParquetFile(tmp_path / "two/interim/tiny/dedupe.parquet").num_row_groups > 2
    a, b = _outputs(tmp_path / "one"), _outputs(tmp_path / "two")
    assert a.keys() == b.keys() and "processed/tiny/morpheme-mecab/vectors.npz" in a
    assert [name for name in a if a[name] != b[name]] == []
    assert one["pretrain"].counts["unlabeled_used"] == two["pretrain"].counts["unlabeled_used"] > 100


def test_tokens_do_not_depend_on_the_input_row_groups(tmp_path, tiny_corpus, monkeypatch):
    """Another partitioning of dedupe.parquet (a file written elsewhere) gives the same tokens.parquet."""
    data = tmp_path / "d"
    monkeypatch.setattr(tables, "ROW_GROUP_ROWS", ROW_GROUP)
    _prepare(data, tiny_corpus)
    tokenize("tiny", MECAB, data_dir=data, workers=2, **QUIET)
    out = data / "processed/tiny/morpheme-mecab/tokens.parquet"
    reference = out.read_bytes()
    interim = data / "interim/tiny"
    pq.write_table(pq.read_table(interim / "dedupe.parquet"), interim / "dedupe.parquet", row_group_size=17)
    adopt_outputs("dedupe", "tiny", interim, ["dedupe.parquet"],
                     read_json(interim / "dedupe.manifest.json")["params"])
    result = tokenize("tiny", MECAB, data_dir=data, workers=2, **QUIET)
    assert not result.skipped and result.counts["partitions"] != reference.count(b"PAR1")
    assert out.read_bytes() == reference


def test_a_killed_worker_is_replaced_and_the_stage_gives_the_same_output(tmp_path, tiny_corpus, small_partitions,
                                                                         monkeypatch):
    data = tmp_path / "d"
    _prepare(data, tiny_corpus)
    tokenize("tiny", MECAB, data_dir=data, workers=1, **QUIET)
    out = data / "processed/tiny/morpheme-mecab/tokens.parquet"
    reference = out.read_bytes()
    marker = tmp_path / "killed-once"
    monkeypatch.setattr(tokenize_stage, "tokenize_rows", DieAtPartition(tokenize_stage.tokenize_rows, 2 * ROW_GROUP,
                                                                        str(marker)))
    result = tokenize("tiny", MECAB, data_dir=data, workers=2, force=True, **QUIET)
    assert marker.exists()                    # a worker did die at partition 2
    assert result.counts["engine"] == "2 Dask workers"
    assert out.read_bytes() == reference


def test_a_partition_that_keeps_killing_workers_fails_the_stage_and_publishes_nothing(tmp_path, tiny_corpus,
                                                                                       small_partitions, monkeypatch):
    data = tmp_path / "d"
    _prepare(data, tiny_corpus)
    monkeypatch.setattr(tokenize_stage, "tokenize_rows", DieAtPartition(tokenize_stage.tokenize_rows, ROW_GROUP))
    monkeypatch.setenv("DASK_DISTRIBUTED__SCHEDULER__ALLOWED_FAILURES", "1")   # give up after 2 deaths
    with pytest.raises(PipelineError, match="killed its Dask worker .* nothing was published"):
        tokenize("tiny", MECAB, data_dir=data, workers=2, **QUIET)
    folder = data / "processed/tiny/morpheme-mecab"
    assert not folder.exists() or not any(folder.iterdir())


def _start(args: list[str], log: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen(args, stdout=log.open("wb"), stderr=subprocess.STDOUT, start_new_session=True, env=env)


def test_stages_run_on_a_separately_started_scheduler_and_two_workers(tmp_path, tiny_corpus, unlabeled,
                                                                      small_partitions):
    reference = _data_stages(tmp_path / "local", tiny_corpus, unlabeled, workers=1)
    with _cluster(tmp_path, workers=2) as (address, _):
        from distributed import Client
        with Client(address, timeout="30s") as c:
            worker_pids = set(c.run(os.getpid).values())
        assert len(worker_pids) == 2 and os.getpid() not in worker_pids
        remote = _data_stages(tmp_path / "remote", tiny_corpus, unlabeled, scheduler=address)
    assert {remote[stage].counts["engine"] for stage in remote} == {f"Dask scheduler {address}"}
    a, b = _outputs(tmp_path / "local"), _outputs(tmp_path / "remote")
    assert a.keys() == b.keys() and [name for name in a if a[name] != b[name]] == []
    assert reference["pretrain"].counts["unlabeled_used"] == remote["pretrain"].counts["unlabeled_used"]


def test_an_unreachable_scheduler_is_a_clear_error(tmp_path, tiny_corpus):
    data = tmp_path / "d"
    _prepare(data, tiny_corpus)
    with pytest.raises(PipelineError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        tokenize("tiny", MECAB, data_dir=data, scheduler="tcp://127.0.0.1:9", **QUIET)
    assert not (data / "processed/tiny/morpheme-mecab/tokens.parquet").exists()


def test_clean_in_blocks_gives_the_rows_of_one_pass_line_numbers_included(tmp_path, tiny_shop, monkeypatch):
    """The shopping file has no ids (a row's id is its line number) and a malformed line: blocks must agree."""
    raw = tiny_shop / "tiny_shop" / "naver_shopping.txt"
    with raw.open("a", encoding="utf-8") as fh:
        fh.write("not a rating\tline\n6\tno such rating\n")
    from pipeline import corpora
    spec = corpora.CORPORA["tiny_shop"]
    monkeypatch.setitem(corpora.CORPORA, "tiny_shop", dataclasses.replace(spec, files=(dataclasses.replace(
        spec.files[0], sha256=sha256_file(raw)),)))
    results, files = [], []
    for name, block_bytes, workers in (("one", 1 << 30, 1), ("blocks", 700, 1), ("cluster", 700, 2)):
        data = tmp_path / name
        download("tiny_shop", data_dir=data, mirror=str(tiny_shop), **QUIET)
        monkeypatch.setattr(clean_stage, "BLOCK_BYTES", block_bytes)
        monkeypatch.setattr(clean_stage, "LOCAL_BELOW", 2)
        results.append(clean("tiny_shop", data_dir=data, workers=workers, **QUIET))
        files.append((data / "interim/tiny_shop/clean.parquet").read_bytes())
    assert [r.counts["partitions"] for r in results][0] == 1 and results[1].counts["partitions"] > 10
    assert results[2].counts["engine"] == "2 Dask workers"
    assert files[0] == files[1] == files[2]
    assert len({json.dumps({k: v for k, v in r.counts.items() if k not in ("partitions", "engine")}, sort_keys=True)
                for r in results}) == 1
    assert sum(results[0].counts["malformed"].values()) == 2
    ids = pq.read_table(tmp_path / "blocks/interim/tiny_shop/clean.parquet", columns=["id"]).column("id").to_pylist()
    assert ids[:3] == ["1", "2", "3"] and ids[-1] == str(len(raw.read_text(encoding="utf-8").splitlines()) - 2)


def _needs_a_missing_library(x: int) -> int:
    import ksent_no_such_library  # noqa: F401
    return x


def test_a_worker_without_a_library_is_a_clear_error():
    with engine.Engine(workers=2) as eng, pytest.raises(PipelineError, match="cannot import ksent_no_such_library"):
        list(eng.map(_needs_a_missing_library, [(1,), (2,)], what="test"))


def test_every_way_of_losing_the_scheduler_is_the_same_clear_error(monkeypatch):
    """Which exception a dying scheduler raises depends on where the client was (a gather on a closed
    stream: CommClosedError, an OSError that would otherwise read as a failed write)."""
    from distributed.comm import CommClosedError

    errors = [CommClosedError("in <TCP (closed) ConnectionPool.gather>: Stream is closed"),
              ConnectionResetError("reset"), concurrent.futures.CancelledError()]
    with engine.Engine(workers=2) as eng:
        for error in errors:
            monkeypatch.setattr(engine, "_result", lambda *a, error=error: (_ for _ in ()).throw(error))
            with pytest.raises(PipelineError, match=rf"lost the Dask scheduler mid-stage \({type(error).__name__}\)"):
                list(eng.map(abs, [(1,), (2,)], what="test"))


def test_split_streams_row_groups_and_keeps_every_row_and_column(tmp_path, tiny_corpus, small_partitions):
    import pandas as pd

    from pipeline.params import SPLIT
    from pipeline.stages.split import assign_splits

    data = tmp_path / "d"
    _prepare(data, tiny_corpus)
    interim = data / "interim/tiny"
    rows = pd.read_parquet(interim / "dedupe.parquet")
    written = pd.read_parquet(interim / "split.parquet")
    assert pq.ParquetFile(interim / "split.parquet").num_row_groups > 2
    expected = rows.assign(split=assign_splits(rows, **SPLIT))
    pd.testing.assert_frame_equal(written.drop(columns="split"), rows)
    assert written["split"].astype(str).tolist() == expected["split"].astype(str).tolist()


def test_read_rows_names_the_stage_to_rerun_or_the_missing_shared_folder(tmp_path):
    with pytest.raises(PipelineError, match="not found where this runs - do the Dask workers see the data folder"):
        tables.read_rows(tmp_path / "absent.parquet", 0, 10, "dedupe", "tiny")
    damaged = tmp_path / "dedupe.parquet"
    damaged.write_bytes(b"PAR1 not really")
    with pytest.raises(PipelineError, match=r"is unreadable .* re-run `ksent dedupe --corpus tiny --force`"):
        tables.read_rows(damaged, 0, 10, "dedupe", "tiny")


@contextlib.contextmanager
def _cluster(tmp_path: Path, *worker_options: str, workers: int = 1):
    """A `dask scheduler` and `workers` single-threaded `dask worker`s started apart from the test (they can
    import the tests' partition wrappers); yields (address, their processes: scheduler first). All are
    killed at the end."""
    dask = str(Path(sys.executable).with_name("dask"))
    scheduler_file = tmp_path / "scheduler.json"
    tests_importable = {**os.environ, "PYTHONPATH": str(REPO)}        # the cluster unpickles the tests' wrappers
    procs = [_start([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                     "--scheduler-file", str(scheduler_file)], tmp_path / "scheduler.log", env=tests_importable)]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        address = read_json(scheduler_file)["address"]
        for i in range(workers):
            procs.append(_start([dask, "worker", address, "--nthreads", "1", "--no-dashboard", "--name", f"w{i}",
                                 *worker_options], tmp_path / f"worker{i}.log", env=tests_importable))
        from distributed import Client
        with Client(address, timeout="30s") as c:
            c.wait_for_workers(workers, timeout=60)
        yield address, procs
    finally:
        for proc in reversed(procs):
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=20)


def test_a_cluster_that_loses_its_last_worker_fails_the_stage_in_bounded_time(tmp_path, tiny_corpus,
                                                                              small_partitions, monkeypatch):
    data = tmp_path / "d"
    _prepare(data, tiny_corpus)
    with _cluster(tmp_path, "--no-nanny") as (address, _):              # no nanny: nothing restarts the worker
        monkeypatch.setattr(engine, "NO_WORKERS_TIMEOUT_S", 3.0)
        monkeypatch.setattr(tokenize_stage, "tokenize_rows", DieAtPartition(tokenize_stage.tokenize_rows, ROW_GROUP))
        started = time.monotonic()
        with pytest.raises(PipelineError, match="the Dask cluster has had no worker for 3 s .* nothing was published"):
            tokenize("tiny", MECAB, data_dir=data, scheduler=address, **QUIET)
        assert time.monotonic() - started < 60                     # it waited forever before
        assert not (data / "processed/tiny/morpheme-mecab/tokens.parquet").exists()


def test_a_scheduler_killed_mid_stage_is_one_line_without_the_clusters_tracebacks(tmp_path, tiny_corpus,
                                                                                   small_partitions):
    data = tmp_path / "d"
    _prepare(data, tiny_corpus)
    marker = tmp_path / "partition-started"
    with _cluster(tmp_path) as (address, procs):
        # `ksent tokenize --scheduler ...` in a subprocess whose partition at row ROW_GROUP waits
        bootstrap = ("import pathlib, tests.helpers as h; from _pytest.monkeypatch import MonkeyPatch; "
                     f"h.register_tiny(MonkeyPatch(), pathlib.Path({str(tiny_corpus)!r})); "
                     "import pipeline.stages.tokenize as t; "
                     f"t.tokenize_rows = h.SlowAtPartition(t.tokenize_rows, {ROW_GROUP}, {str(marker)!r}); "
                     "from pipeline.apps.cli import cli; cli(prog_name='ksent')")
        run = subprocess.Popen([sys.executable, "-c", bootstrap, "tokenize", "--corpus", "tiny", "--tokenizer",
                                "morpheme", "--scheduler", address, "--data-dir", str(data)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
        deadline = time.monotonic() + 90
        while not marker.exists() and time.monotonic() < deadline and run.poll() is None:
            time.sleep(0.2)
        assert marker.exists(), run.communicate(timeout=30)
        os.killpg(procs[0].pid, signal.SIGKILL)                     # the scheduler dies mid-stage
        _, err = run.communicate(timeout=120)
    err = err.decode()
    assert run.returncode == 1 and "Traceback" not in err, err[-2000:]
    assert err.count("Error:") == 1 and "lost the Dask scheduler mid-stage" in err, err[-2000:]
    assert not (data / "processed/tiny/morpheme-mecab/tokens.parquet").exists()
