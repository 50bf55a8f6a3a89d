"""Benchmark `ksent predict` as a user runs it: whole processes, wall time and peak memory from the OS.

    .venv/bin/python tests/benchmarks/bench_predict.py --model artifacts/nsmc-morpheme-mecab

(a) Cold start: `ksent predict --model DIR "<review>"` (model.onnx, onnxruntime) against
    `python -c 'import numpy'` and against the same command with `--runtime keras`
    (the TensorFlow path), interleaved run by run so machine noise hits all three alike.
    Per run: seconds from process start to the first line on stdout, and the process's
    peak RSS (getrusage via os.wait4). Medians and ratios are printed.
(b) Batch: `ksent predict --file` end to end (process start to exit) on the 50,000
    NSMC test reviews, then on 200,000- and 1,000,000-line files (the test reviews
    repeated): reviews/s and peak memory, which should not grow with the file: RSS of the
    largest process (getrusage), and of ksent's whole process tree (main process,
    forkserver and analyzer workers: PSS summed from /proc every 0.2 s, so pages the
    workers share, such as the Mecab dictionary, count once).
(c) The network alone: onnxruntime vs Keras on the 50,000 padded test reviews, in-process.
(d) With --compare DIR,DIR,...: (b) for several bundles side by side (e.g. the ensemble, the
    default model and the distilled student; DIR@onnx-int8 runs a bundle with `--runtime
    onnx-int8`), interleaved per file so noise hits them alike,
    median of --repeat-batch runs, with each one's reviews/s as a ratio to the first's; before
    it, (a)'s cold start for each bundle, interleaved, as a ratio to the first's. --split-test adds the test
    texts of a split.parquet (another corpus's reviews, e.g. the shopping sample's) to the files.
    (bench_network.py compares the network graphs alone.)
Not a pytest test (the name does not start with test_): it needs a trained bundle.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
REVIEW = "배우들 연기가 훌륭하고 스토리도 감동적이에요"


def entry_point() -> list[str]:
    script = Path(sys.executable).with_name("ksent")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "pipeline"]


def _process_tree_pss_mb(root: int) -> float:
    """Memory of `root` and all its descendants (analyzer workers, the forkserver): their summed PSS from
    /proc/PID/smaps_rollup, which counts a page shared by N processes (the Mecab dictionary, mapped by
    every worker) 1/N times in each, so the sum is what the tree really occupies."""
    parents: dict[int, int] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat", "rb") as f:
                    parents[int(entry)] = int(f.read().rsplit(b")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = {root}, [root]
    while frontier:
        children = [pid for pid, ppid in parents.items() if ppid in frontier and pid not in tree]
        tree.update(children)
        frontier = children
    total = 0
    for pid in tree:
        try:
            with open(f"/proc/{pid}/smaps_rollup") as f:
                total += next((int(line.split()[1]) for line in f if line.startswith("Pss:")), 0)
        except OSError:
            continue
    return total / 1024


class TreeSampler(threading.Thread):
    """The peak of `_process_tree_pss_mb(pid)`, sampled every `interval` seconds until `stop()`."""

    def __init__(self, pid: int, interval: float = 0.2):
        super().__init__(daemon=True)
        self.pid, self.interval, self.peak, self._stop_event = pid, interval, 0.0, threading.Event()
        self.start()

    def run(self) -> None:
        while not self._stop_event.wait(self.interval):
            self.peak = max(self.peak, _process_tree_pss_mb(self.pid))

    def stop(self) -> float:
        self._stop_event.set()
        self.join()
        return self.peak


def run_measured(args: list[str], stdout=subprocess.PIPE, sample_tree: bool = False):
    """(seconds to the first stdout line, seconds to exit, peak RSS in MB of the largest process, first line,
    sampled peak of the whole process tree's PSS in MB or None) of one process."""
    started = time.perf_counter()
    proc = subprocess.Popen(args, cwd=REPO, stdout=stdout, stderr=subprocess.PIPE)
    sampler = TreeSampler(proc.pid) if sample_tree else None
    first_line, first_at = b"", None
    if stdout is subprocess.PIPE:
        first_line = proc.stdout.readline()
        first_at = time.perf_counter() - started
        proc.stdout.read()
    err = proc.stderr.read()
    tree_peak = sampler.stop() if sampler else None
    _, status, usage = os.wait4(proc.pid, 0)
    ended = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args[:4])} ... failed (exit {proc.returncode}):\n{err.decode()[-2000:]}")
    return first_at or ended, ended, usage.ru_maxrss // 1024, first_line.decode().strip(), tree_peak


def cold_start(model: Path, repeat: int) -> None:
    commands = {
        "python -c 'import numpy'": [sys.executable, "-c", "import numpy"],
        "ksent predict (onnx)": [*entry_point(), "predict", "--model", str(model), REVIEW],
        "ksent predict --runtime keras": [*entry_point(), "predict", "--model", str(model), "--runtime", "keras",
                                          REVIEW],
    }
    results: dict[str, list[tuple[float, int]]] = {name: [] for name in commands}
    for _ in range(repeat):
        for name, args in commands.items():
            first, _, rss, line, _ = run_measured(args)
            results[name].append((first, rss))
    numpy_s = statistics.median(s for s, _ in results["python -c 'import numpy'"])
    onnx_s = statistics.median(s for s, _ in results["ksent predict (onnx)"])
    for name, runs in results.items():
        s, rss = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        print(f"  {name:32s} first output {s:5.2f} s (runs: {', '.join(f'{r[0]:.2f}' for r in runs)}), "
              f"peak RSS {rss:4.0f} MB; {s / numpy_s:4.1f}x import numpy, {s / onnx_s:4.1f}x onnx")
    print(f"  output: {line}")


def nsmc_test_reviews(mirror: Path) -> list[str]:
    """The document column of the NSMC test file, as a user would have the reviews."""
    rows = (mirror / "nsmc" / "ratings_test.txt").read_text(encoding="utf-8").splitlines()[1:]
    return [row.split("\t")[1] for row in rows]


def review_file(directory: Path, mirror: Path, lines: int | None) -> tuple[Path, int]:
    """The NSMC test reviews, repeated to `lines` lines if given."""
    reviews = nsmc_test_reviews(mirror)
    n = lines or len(reviews)
    path = directory / f"reviews-{n}.txt"
    with path.open("w", encoding="utf-8") as out:
        for start in range(0, n, len(reviews)):
            out.write("\n".join(reviews[:min(len(reviews), n - start)]) + "\n")
    return path, n


def batch(model: Path, mirror: Path, sizes: list[int | None]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for size in sizes:
            path, n = review_file(Path(tmp), mirror, size)
            out_path = Path(tmp) / "out.txt"
            with out_path.open("wb") as out:
                _, seconds, rss, _, tree = run_measured([*entry_point(), "predict", "--model", str(model), "--file",
                                                         str(path)], stdout=out, sample_tree=True)
            with out_path.open("rb") as out:
                results = sum(1 for _ in out)
            assert results == n, f"{results} results for {n} lines"
            print(f"  {n:>9,} lines: {seconds:6.1f} s end to end = {n / seconds:7,.0f} reviews/s, "
                  f"peak RSS {rss} MB (largest process), {tree:.0f} MB (PSS of all its processes, sampled); "
                  f"{results:,} results")


def parse_compare(value: str) -> list[tuple[Path, str | None]]:
    """--compare's items: DIR, or DIR@RUNTIME (a `ksent predict --runtime`, e.g. onnx-int8)."""
    items = []
    for item in value.split(","):
        path, _, runtime = item.partition("@")
        items.append((Path(path).resolve(), runtime or None))
    return items


def predict_args(model: tuple[Path, str | None]) -> list[str]:
    path, runtime = model
    return [*entry_point(), "predict", "--model", str(path), *(["--runtime", runtime] if runtime else [])]


def labels(models: list[tuple[Path, str | None]]) -> list[str]:
    """Each bundle's folder name (its whole path where two bundles share a name, e.g. two students), and
    @runtime when one is given."""
    paths = {path for path, _ in models}
    return [(path.name if sum(p.name == path.name for p in paths) == 1 else str(path))
            + (f"@{runtime}" if runtime else "") for path, runtime in models]


def compare_cold_start(models: list[tuple[Path, str | None]], repeat: int) -> None:
    """(a) for several bundles: `ksent predict --model DIR "<review>"`, interleaved run by run."""
    commands = {"python -c 'import numpy'": [sys.executable, "-c", "import numpy"]}
    commands.update({label: [*predict_args(m), REVIEW] for label, m in zip(labels(models), models, strict=True)})
    seconds: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(repeat):
        for name, args in commands.items():
            seconds[name].append(run_measured(args)[0])
    first_label = labels(models)[0]
    first = statistics.median(seconds[first_label])
    for name, runs in seconds.items():
        s = statistics.median(runs)
        print(f"    {name:32s} first output {s:5.3f} s (runs: {', '.join(f'{r:.2f}' for r in runs)})  "
              f"{s / first:5.2f}x {first_label}")


def split_test_file(directory: Path, split: Path) -> tuple[Path, int]:
    """The raw test texts of a split stage's split.parquet (one a line; line breaks inside a review as spaces)."""
    from pipeline.core.tables import read_split_texts

    texts = [" ".join(t.split()) for t in read_split_texts(split, split.parent.name, ("test",))["test"][0]]
    path = directory / f"{split.parent.name}-test.txt"
    path.write_text("\n".join(texts) + "\n", encoding="utf-8")
    return path, len(texts)


def compare(models: list[tuple[Path, str | None]], mirror: Path, sizes: list[int | None], repeat: int,
            splits: list[Path] = ()) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        files = [review_file(Path(tmp), mirror, size) for size in sizes]
        files += [split_test_file(Path(tmp), split) for split in splits]
        for path, n in files:
            seconds: dict[tuple[Path, str | None], list[float]] = {m: [] for m in models}
            for _ in range(repeat):
                for model in models:
                    with (Path(tmp) / "out.txt").open("wb") as out:
                        _, took, _, _, _ = run_measured([*predict_args(model), "--file", str(path)], stdout=out)
                    seconds[model].append(took)
            first = n / statistics.median(seconds[models[0]])
            print(f"  {n:>9,} lines ({path.stem}):")
            for label, model in zip(labels(models), models, strict=True):
                rate = n / statistics.median(seconds[model])
                print(f"    {label:32s} {rate:8,.0f} reviews/s (runs: "
                      f"{', '.join(f'{s:.1f}' for s in seconds[model])} s)  {rate / first:5.2f}x {labels(models)[0]}")


def network_only(model: Path, mirror: Path) -> None:
    from pipeline.predict.loading import load_bundle

    reviews = nsmc_test_reviews(mirror)
    for runtime in ("onnx", "keras"):
        bundle = load_bundle(model, runtime=runtime)
        members = getattr(bundle, "members", [bundle])                # an ensemble: each member's network
        xs = [m.transform(reviews) for m in members]
        for m, x in zip(members, xs, strict=True):
            m.predict_ids(x[:2000])                                   # warm-up (Keras traces its function)
        times = []
        for _ in range(3):
            started = time.perf_counter()
            for m, x in zip(members, xs, strict=True):
                m.predict_ids(x)
            times.append(time.perf_counter() - started)
        best = min(times)
        what = f" ({len(members)} networks)" if len(members) > 1 else ""
        print(f"  {bundle.runtime:12s} {len(reviews):,} padded reviews{what} in {best:.2f} s = "
              f"{len(reviews) / best:,.0f} reviews/s (best of 3)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="bundle directory [default: the best NSMC bundle in "
                                                   "./artifacts, as `ksent predict` picks it]")
    parser.add_argument("--mirror", type=Path, default=REPO.parent / "shared" / "corpora",
                        help="folder holding nsmc/ratings_test.txt [default: %(default)s]")
    parser.add_argument("--repeat", type=int, default=5, help="cold-start runs of each command")
    parser.add_argument("--sizes", default="0,200000,1000000",
                        help="line counts of the batch files (0 = the 50,000 test reviews as they are)")
    parser.add_argument("--skip", default="", help="comma-separated parts to skip: a, b, c")
    parser.add_argument("--compare", default="", help="comma-separated bundle folders, each DIR or DIR@RUNTIME "
                                                      "(e.g. DIR@onnx-int8): parts (a) and (d)")
    parser.add_argument("--repeat-batch", type=int, default=3, help="(d): runs of each bundle per file")
    parser.add_argument("--split-test", type=Path, action="append", default=[], metavar="SPLIT_PARQUET",
                        help="(d): also the test texts of this split.parquet, e.g. "
                             "data/interim/naver_shopping_sample/split.parquet (repeatable)")
    args = parser.parse_args()
    from pipeline.predict.selection import default_model_dir

    skip = set(args.skip.split(","))
    if args.compare:
        models = parse_compare(args.compare)
        if "a" not in skip:
            print(f"(a) cold start, median of {args.repeat} interleaved runs: process start -> first line on stdout")
            compare_cold_start(models, args.repeat)
        print(f"(d) ksent predict --file, end to end, median of {args.repeat_batch} interleaved runs "
              f"(cpu cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f})")
        compare(models, args.mirror, [int(s) or None for s in args.sizes.split(",")], args.repeat_batch,
                args.split_test)
        return
    model = (args.model or default_model_dir(REPO / "artifacts")).resolve()
    print(f"bundle: {model}  (cpu cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f})")
    if "a" not in skip:
        print(f"(a) cold start, median of {args.repeat} interleaved runs: process start -> first line on stdout")
        cold_start(model, args.repeat)
    if "b" not in skip:
        print("(b) ksent predict --file, end to end (process start to exit)")
        batch(model, args.mirror, [int(s) or None for s in args.sizes.split(",")])
    if "c" not in skip:
        print("(c) the network alone, in-process")
        network_only(model, args.mirror)


if __name__ == "__main__":
    main()
