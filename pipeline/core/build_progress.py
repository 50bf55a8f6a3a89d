"""Where a whole build (`make all`) is: stage n of N, the time since it began, and an estimate of what is left.

`make all` runs many ksent commands, some side by side. Before the first, `ksent plan --progress-file F`
writes F: the stages the build will run, each with the duration its manifest recorded the last time it
ran (None when it never did). Every command of the build is given F in KSENT_BUILD_PROGRESS, and each
stage that runs (not one skipped as up to date) marks itself in F as it starts and ends, under a file
lock (lanes run at once), and prints one line:

    [7/31] train nsmc/morpheme-mecab (12:04 since make all began; about 38 min left by the recorded times of 24 stages)

The estimate sums the recorded durations of the stages not done yet; a stage with none adds nothing,
and the line says how many it counts. A stage the plan did not foresee raises N.
"""
from __future__ import annotations

import contextlib
import json
import os
import time
from collections.abc import Iterator
from pathlib import Path

ENV = "KSENT_BUILD_PROGRESS"


def write_plan(path: Path | str, stages: dict[str, float | None]) -> None:
    """Begin a build: `stages` (stage name and label, e.g. "train nsmc/word" -> recorded seconds or None)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"started": time.time(), "planned": stages, "started_stages": [], "done": {}}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


@contextlib.contextmanager
def _state() -> Iterator[dict | None]:
    """The build's state, locked and written back; None outside a build (or with an unreadable file)."""
    target = os.environ.get(ENV)
    if not target:
        yield None
        return
    from filelock import FileLock

    path = Path(target)
    try:
        with FileLock(str(path) + ".lock", thread_local=False):
            state = json.loads(path.read_text(encoding="utf-8"))
            yield state
            path.write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")
    except (OSError, ValueError, TypeError, AttributeError):
        yield None


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def line(state: dict, what: str, now: float | None = None) -> str:
    """The progress line for stage `what`, just started."""
    planned, started = state["planned"], state["started_stages"]
    total = len(set(planned) | set(started))
    n = started.index(what) + 1 if what in started else len(started)
    elapsed = (now or time.time()) - state["started"]
    left = [seconds for stage, seconds in planned.items() if stage not in state["done"]]     # this one included
    known = [s for s in left if isinstance(s, (int, float))]
    estimate = (f"; about {_clock(sum(known))} left by the recorded times of {len(known)} of {len(left)} stages"
                if known else "")
    return f"[{n}/{total}] {what} ({_clock(elapsed)} since make all began{estimate})"


def stage_started(what: str) -> str | None:
    """Mark `what` as running; its progress line, or None outside a build."""
    with _state() as state:
        if state is None:
            return None
        if what not in state["started_stages"]:
            state["started_stages"].append(what)
        return line(state, what)


def stage_done(what: str, seconds: float) -> None:
    with _state() as state:
        if state is not None:
            state["done"][what] = round(seconds, 1)
