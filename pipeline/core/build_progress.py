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

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

ENV = "KSENT_BUILD_PROGRESS"
T = TypeVar("T")


def write_plan(path: Path | str, stages: dict[str, float | None]) -> None:
    """Begin a build: `stages` (stage name and label, e.g. "train nsmc/word" -> recorded seconds or None)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {"started": time.time(), "planned": stages, "started_stages": [], "done": {}}
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


def line(state: dict, what: str) -> str:
    """The progress line for stage `what`, just started (marked in `state`)."""
    planned, started = state["planned"], state["started_stages"]
    total = len(set(planned) | set(started))
    elapsed = time.time() - state["started"]
    left = [seconds for stage, seconds in planned.items() if stage not in state["done"]]     # this one included
    known = [s for s in left if isinstance(s, (int, float))]
    estimate = (f"; about {_clock(sum(known))} left by the recorded times of {len(known)} of {len(left)} stages"
                if known else "")
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
