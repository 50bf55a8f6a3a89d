"""Where a whole build (`make all`) is: stage n of N, the time since it began, and an estimate of what is left.

`make all` runs many ksent commands, some side by side. Before the first, `ksent plan --progress-file F`
writes F: the stages the build will run, each with the duration its manifest recorded the last time it
ran (None when it never did). Every command of the build is given F in KSENT_BUILD_PROGRESS, and each
stage that runs (not one skipped as up to date) marks itself in F as it starts and ends, under a file
lock (lanes run at once), and prints one line:

    [7/31] train nsmc/morpheme-mecab (12:04 since make all began; about 38 min left by the recorded times of 24 stages)

The estimate adds up the recorded durations of the stages not done yet, lanes side by side: the stages of one
tokenization (a lane) run one after another, `jobs` lanes at a time, so their part is the longest queue when
the lanes' remaining times are dealt out longest first to `jobs` slots (as `make -j` runs them); the other
stages (a corpus's data stages, the ensembles, the router, the student) run alone and add in full. A stage
with no recorded time adds nothing, and the line says how many it counts. A stage the plan did not foresee
raises N.
"""
from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

ENV = "KSENT_BUILD_PROGRESS"
T = TypeVar("T")


def write_plan(path: Path | str, stages: dict[str, float | None], lanes: dict[str, str] | None = None,
               jobs: int = 1) -> None:
    """Begin a build: `stages` (stage name and label, e.g. "train nsmc/word" -> recorded seconds or None), the
    lane of each stage that runs in one (`lanes`: stage -> tokenization) and how many lanes run at a time."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"started": time.time(), "planned": stages, "lanes": lanes or {}, "jobs": max(1, jobs),
             "started_stages": [], "done": {}}
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, path)


def _update(change: Callable[[dict], T]) -> T | None:
    """`change(state)` on the build's state, under its lock, the state written back; None outside a build, or
    where the state cannot be read or written (a damaged progress file never stops a stage)."""
    target = os.environ.get(ENV)
    if not target:
        return None
    from filelock import FileLock

    path = Path(target)
    try:
        with FileLock(str(path) + ".lock", thread_local=False):
            state = json.loads(path.read_text(encoding="utf-8"))
            result = change(state)
            path.write_text(json.dumps(state, ensure_ascii=False), encoding="utf-8")
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None
    return result


def _clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 3600}:{seconds // 60 % 60:02d}:{seconds % 60:02d}" if seconds >= 3600 else \
        f"{seconds // 60}:{seconds % 60:02d}"


def time_left(seconds: dict[str, float], lanes: dict[str, str], jobs: int) -> float:
    """The build's time for stages taking `seconds`: those outside `lanes` one after another, the lanes' `jobs`
    at a time (each lane's total to the least busy of `jobs` slots, the longest lane first)."""
    alone, per_lane = 0.0, {}
    for stage, duration in seconds.items():
        if stage in lanes:
            per_lane[lanes[stage]] = per_lane.get(lanes[stage], 0.0) + duration
        else:
            alone += duration
    slots = [0.0] * max(1, jobs)
    for work in sorted(per_lane.values(), reverse=True):
        slots[slots.index(min(slots))] += work
    return alone + max(slots)


def line(state: dict, what: str) -> str:
    """The progress line for stage `what`, just started (marked in `state`)."""
    planned, started = state["planned"], state["started_stages"]
    total = len(set(planned) | set(started))
    elapsed = time.time() - state["started"]
    left = [stage for stage in planned if stage not in state["done"]]      # this one included
    known = {stage: planned[stage] for stage in left if isinstance(planned[stage], (int, float))}
    estimate = (f"; about {_clock(time_left(known, state.get('lanes', {}), state.get('jobs', 1)))} left by the "
                f"recorded times of {len(known)} of {len(left)} stages" if known else "")
    return f"[{started.index(what) + 1}/{total}] {what} ({_clock(elapsed)} since make all began{estimate})"


def stage_started(what: str) -> str | None:
    """Mark `what` as running; its progress line, or None outside a build."""
    def start(state: dict) -> str:
        if what not in state["started_stages"]:
            state["started_stages"].append(what)
        return line(state, what)

    return _update(start)


def stage_done(what: str, seconds: float) -> None:
    def done(state: dict) -> None:
        state["done"][what] = round(seconds, 1)

    _update(done)
