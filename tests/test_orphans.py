"""No orphan workers: whatever ends the main process, the SegmentPool workers exit within seconds.

Each test runs a real main process (a script) with a busy pool of 2 mecab workers, in a
session of its own so that `finally` can kill whatever is left (workers and forkserver
share its process group).
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from pipeline.text.pool import SegmentPool
from pipeline.text.segment import Segmenter

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals and process groups")

LINUX = sys.platform.startswith("linux")

MAIN = textwrap.dedent("""\
    import signal, sys
    from pipeline.errors import PipelineError
    from pipeline.text import pool as segment_pool
    from pipeline.text.pool import SegmentPool
    from pipeline.text.segment import Segmenter

    if __name__ == "__main__":  # forkserver pools re-import __main__
        # as from a terminal, even when the test run itself was started in the background
        # (a shell starts background jobs with SIGINT ignored, which a child inherits)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        if sys.argv[1] == "handler":  # what the CLI does: let Python's cleanup run
            signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        texts = ["영화가 정말 재밌었어요 배우들 연기가 너무 좋았다 " * 10] * 300_000
        with SegmentPool(Segmenter("morpheme", backend="mecab"), 2) as pool:
            print(*pool.pids, flush=True)
            try:
                pool.map(texts, progress=False)
            except PipelineError as exc:
                sys.exit(f"PipelineError: {exc}")
    """)


def _gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    try:  # a zombie is dead, only not reaped yet (by init: it is not our child)
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rpartition(")")[2].split()[0] in ("Z", "X")
    except (FileNotFoundError, ProcessLookupError):
        return True
    except OSError:
        return False


def _wait_gone(pids: list[int], seconds: float = 10.0) -> list[int]:
    """The pids still alive after `seconds`."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not all(map(_gone, pids)):
        time.sleep(0.1)
    return [p for p in pids if not _gone(p)]


def _parent(pid: int) -> int:
    with open(f"/proc/{pid}/stat") as fh:
        return int(fh.read().rpartition(")")[2].split()[1])


@pytest.fixture
def main_process(tmp_path):
    """start(mode) -> (process, worker pids); everything it started is killed afterwards."""
    script = tmp_path / "main.py"
    script.write_text(MAIN, encoding="utf-8")
    started: list[subprocess.Popen] = []

    def start(mode: str = "plain") -> tuple[subprocess.Popen, list[int]]:
        proc = subprocess.Popen([sys.executable, str(script), mode], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, start_new_session=True)
        started.append(proc)
        line = proc.stdout.readline()  # blocks until the pool is ready (or the script failed)
        assert line.strip(), proc.communicate(timeout=30)[1]
        pids = [int(p) for p in line.split()]
        time.sleep(0.5)  # let the workers get busy
        return proc, pids

    try:
        yield start
    finally:
        for proc in started:
            try:
                os.killpg(proc.pid, signal.SIGKILL)  # the session id is the main process's pid
            except (ProcessLookupError, PermissionError):
                pass
            proc.kill()
            proc.communicate()


@pytest.mark.parametrize("how", ["SIGKILL", "SIGTERM", "SIGTERM-handler", "Ctrl-C"])
def test_workers_exit_with_the_main_process(main_process, how):
    proc, workers = main_process("handler" if how == "SIGTERM-handler" else "plain")
    forkserver = [_parent(workers[0])] if LINUX else []
    assert forkserver != [proc.pid]
    signalled = time.monotonic()
    if how == "Ctrl-C":  # a terminal signals the whole foreground process group
        os.killpg(proc.pid, signal.SIGINT)
    else:
        proc.send_signal(signal.SIGKILL if how == "SIGKILL" else signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    if how in ("SIGTERM-handler", "Ctrl-C"):
        # Python's cleanup ran and did not wait for the ~2,000 queued chunks
        assert time.monotonic() - signalled < 6, err
        assert proc.returncode == (143 if how == "SIGTERM-handler" else -signal.SIGINT), err
        assert err.count("Traceback") <= 1, err  # the workers ignore SIGINT: no traceback from them
    assert _wait_gone(workers + forkserver) == [], f"alive after {how}"


def test_workers_exit_when_the_lifeline_closes():
    # what the workers see when the main process dies, with its forkserver still alive
    pool = SegmentPool(Segmenter("morpheme", backend="mecab"), 2)
    try:
        pool._lifeline.close()
        assert _wait_gone(pool.pids) == []
    finally:
        pool.close(now=True)
    assert _wait_gone(pool.pids, 0) == []


@pytest.mark.skipif(not LINUX, reason="PR_SET_PDEATHSIG is Linux only")
def test_forkserver_workers_die_with_the_forkserver(main_process):
    # the kernel's parent-death signal alone: the main process is stopped (it cannot stop
    # the workers itself) and alive (the lifeline stays open)
    proc, workers = main_process()
    forkserver = _parent(workers[0])
    proc.send_signal(signal.SIGSTOP)
    try:
        os.kill(forkserver, signal.SIGKILL)
        assert _wait_gone(workers) == []
    finally:
        proc.send_signal(signal.SIGCONT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 1 and "worker process died" in err, err


CLOSE_UNDER_LOAD = textwrap.dedent("""\
    import random, sys, time
    from pipeline.text import pool as segment_pool
    from pipeline.text.pool import SegmentPool
    from pipeline.text.segment import Segmenter

    if __name__ == "__main__":
        seg, text = Segmenter("morpheme", backend="mecab", with_tags=True), "영화가 정말 재밌었어요 " * 50
        for _ in range(8):
            pool = SegmentPool(seg, 2)
            futures = [pool._executor.submit(segment_pool._segment_chunk, [text] * 100) for _ in range(40)]
            thread = pool._executor._executor_manager_thread
            time.sleep(random.uniform(0.05, 0.3))
            started = time.monotonic()
            pool.close(now=True)
            thread.join(10)
            assert not thread.is_alive(), "executor thread stuck"
            assert time.monotonic() - started < 5, "slow close"
        print("ok", flush=True)
    """)


def test_close_now_under_load_never_leaves_the_executor_stuck(tmp_path):
    # workers killed while sending large results leave half a message in the result pipe
    script = tmp_path / "close.py"
    script.write_text(CLOSE_UNDER_LOAD, encoding="utf-8")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0 and out.strip() == "ok", err
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
        proc.kill()
        proc.communicate()
