"""Benchmark `ksent predict` as a user runs it: whole processes, wall time and peak memory from the OS.

    .venv/bin/python tests/benchmarks/bench_predict.py [--model artifacts/nsmc-morpheme-mecab]

(a) Cold start: `ksent predict --model DIR "<review>"` (model.onnx, onnxruntime) against
    `python -c 'import numpy'` and against the same command with `--runtime keras`
    (the TensorFlow path), interleaved run by run so machine noise hits all three alike.
    Per run: seconds from process start to the first line on stdout, and the process's
    peak RSS (getrusage via os.wait4). Medians and ratios are printed.
(b) Batch: `ksent predict --file` end to end (process start to exit) on the 50,000
    NSMC test reviews, then on 200,000- and 1,000,000-line files (the test reviews
    repeated): reviews/s and peak RSS, which should not grow with the file.
(c) The network alone: onnxruntime vs Keras on the 50,000 padded test reviews, in-process.
Not a pytest test (the name does not start with test_): it needs a trained bundle.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
REVIEW = "배우들 연기가 훌륭하고 스토리도 감동적이에요"


def entry_point() -> list[str]:
    script = Path(sys.executable).with_name("ksent")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "pipeline"]


def run_measured(args: list[str], stdout=subprocess.PIPE) -> tuple[float, float, int, str]:
    """(seconds to the first stdout line, seconds to exit, peak RSS in MB, first line) of one process."""
    started = time.perf_counter()
    proc = subprocess.Popen(args, cwd=REPO, stdout=stdout, stderr=subprocess.PIPE)
    first_line, first_at = b"", None
    if stdout is subprocess.PIPE:
        first_line = proc.stdout.readline()
        first_at = time.perf_counter() - started
        proc.stdout.read()
    err = proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    ended = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        sys.exit(f"{' '.join(args[:4])} ... failed (exit {proc.returncode}):\n{err.decode()[-2000:]}")
    return first_at or ended, ended, usage.ru_maxrss // 1024, first_line.decode().strip()


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
            first, _, rss, line = run_measured(args)
            results[name].append((first, rss))
    numpy_s = statistics.median(s for s, _ in results["python -c 'import numpy'"])
    onnx_s = statistics.median(s for s, _ in results["ksent predict (onnx)"])
    for name, runs in results.items():
        s, rss = statistics.median(r[0] for r in runs), statistics.median(r[1] for r in runs)
        print(f"  {name:32s} first output {s:5.2f} s (runs: {', '.join(f'{r[0]:.2f}' for r in runs)}), "
              f"peak RSS {rss:4.0f} MB; {s / numpy_s:4.1f}x import numpy, {s / onnx_s:4.1f}x onnx")
    print(f"  output: {line}")


def review_file(directory: Path, mirror: Path, lines: int | None) -> tuple[Path, int]:
    """The NSMC test reviews (document column), repeated to `lines` lines if given."""
    source = mirror / "nsmc" / "ratings_test.txt"
    reviews = [row.split("\t")[1] for row in source.read_text(encoding="utf-8").splitlines()[1:]]
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
                _, seconds, rss, _ = run_measured([*entry_point(), "predict", "--model", str(model), "--file",
                                                   str(path)], stdout=out)
            with out_path.open("rb") as out:
                results = sum(1 for _ in out)
            assert results == n, f"{results} results for {n} lines"
            print(f"  {n:>9,} lines: {seconds:6.1f} s end to end = {n / seconds:7,.0f} reviews/s, "
                  f"peak RSS {rss} MB ({results:,} results)")


def network_only(model: Path, mirror: Path) -> None:
    from pipeline.bundle import load_bundle

    reviews = [row.split("\t")[1] for row in
               (mirror / "nsmc" / "ratings_test.txt").read_text(encoding="utf-8").splitlines()[1:]]
    for runtime in ("onnx", "keras"):
        bundle = load_bundle(model, runtime=runtime)
        x = bundle.transform(reviews)
        bundle.predict_ids(x[:2000])                                  # warm-up (Keras traces its function)
        times = []
        for _ in range(3):
            started = time.perf_counter()
            bundle.predict_ids(x)
            times.append(time.perf_counter() - started)
        best = min(times)
        print(f"  {bundle.runtime:12s} {len(x):,} padded reviews in {best:.2f} s = {len(x) / best:,.0f} reviews/s "
              f"(best of 3)")


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
    args = parser.parse_args()
    from pipeline.bundle import default_model_dir

    model = (args.model or default_model_dir(REPO / "artifacts")).resolve()
    print(f"bundle: {model}  (cpu cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f})")
    skip = set(args.skip.split(","))
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
