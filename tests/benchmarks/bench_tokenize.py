"""Throughput of every tokenizer on the 50,000 NSMC test reviews, 1 worker and all cores.

    .venv/bin/python tests/benchmarks/bench_tokenize.py            # from the repository root
    .venv/bin/python tests/benchmarks/bench_tokenize.py --only mecab,okt --limit 10000
    .venv/bin/python tests/benchmarks/bench_tokenize.py --file path/to/ratings_test.txt

Reviews are normalized first with the clean stage's default profile (hangul, squeeze=2),
as the pipeline does. Each configuration runs in a fresh process, so start-up (JVM,
dictionaries, models, worker processes) is measured from cold and reported apart from
throughput: docs/s counts only the analysis after every worker is ready. On a shared machine
the wall clock depends on what else runs; the CPU-time columns do not (see measure()). The 200k column
extrapolates start-up + 200,000 / (docs/s) for the whole NSMC. "same" says whether the
tokens with N workers are identical to those with 1 (they must be).

Not a pytest module (no test_ functions, name does not match test_*.py).
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

CONFIGS = {  # label -> Segmenter kwargs
    "word": {"kind": "word"},
    "char": {"kind": "char"},
    "char-jamo": {"kind": "char", "jamo": True},
    "mecab": {"kind": "morpheme", "backend": "mecab"},
    "okt": {"kind": "morpheme", "backend": "okt"},
    "kiwi": {"kind": "morpheme", "backend": "kiwi"},
}
NSMC_DOCS = 200_000


def load_texts(path: Path | None, limit: int | None) -> tuple[list[str], str]:
    from pipeline.corpora import CORPORA
    nsmc = CORPORA["nsmc"]
    if path is None:
        table, _ = nsmc.read(ROOT.parent / "shared" / "corpora" / "nsmc")
        texts = table.loc[table["source"] == "test", "text"].tolist()
    else:
        from pipeline.corpora.readers import read_file
        texts = read_file(path, nsmc, "test")[0]["text"].tolist()
    try:
        from pipeline.text.normalize import Normalizer
        normalize, how = Normalizer(profile="hangul", squeeze=2), "normalized (hangul, squeeze=2)"
        texts = [normalize(t) for t in texts]
    except ImportError:
        how = "raw (pipeline.text.normalize not available)"
    return texts[:limit] if limit else texts, how


def worker_cpu_seconds(pool) -> list[float]:
    """CPU time each pool worker has used so far, all its threads (a JVM's GC and JIT threads too)."""
    import psutil  # installed with distributed

    return [sum(psutil.Process(pid).cpu_times()[:2]) for pid in pool.pids]


def measure(label: str, workers: int, texts_file: str) -> dict:
    """Runs in a fresh process: start-up, then throughput, of one configuration."""
    from pipeline.text import morph
    from pipeline.text.pool import SegmentPool, segment_many
    from pipeline.text.segment import Segmenter

    with open(texts_file, "rb") as fh:
        texts = pickle.load(fh)
    seg = Segmenter(**CONFIGS[label])
    started = time.perf_counter()
    pool = None
    if seg.kind == "morpheme":
        parallel = morph.BACKENDS[seg.backend].parallel
        if workers > 1 and parallel == "process":
            pool = SegmentPool(seg, workers)
        else:
            seg._analyzer(threads=workers if parallel == "thread" else 1).analyze("영화가 정말 재밌었어요")
    startup = time.perf_counter() - started
    worker_cpu0 = worker_cpu_seconds(pool) if pool else []
    started, cpu1 = time.perf_counter(), time.process_time()
    if pool is not None:
        with pool:
            tokens = pool.map(texts, progress=False)
            seconds, main_cpu = time.perf_counter() - started, time.process_time() - cpu1
            worker_cpu = [b - a for a, b in zip(worker_cpu0, worker_cpu_seconds(pool), strict=True)]
    else:
        tokens = segment_many(seg, texts, workers=workers, progress=False)
        seconds, main_cpu = time.perf_counter() - started, time.process_time() - cpu1
        worker_cpu = []
    # On an idle machine with a core per worker, each process would run at full speed: the
    # analysis would take the busiest worker's CPU time, or the total (parent included)
    # spread over the cores if that is longer. kiwi's threads (one process): its CPU time
    # over the threads, a lower bound marked "~".
    threaded = seg.kind == "morpheme" and workers > 1 and not worker_cpu
    if worker_cpu:
        idle_seconds = max(max(worker_cpu), (main_cpu + sum(worker_cpu)) / workers)
    else:
        idle_seconds = main_cpu / workers if threaded else main_cpu
    digest = hashlib.sha256(json.dumps(tokens, ensure_ascii=False).encode()).hexdigest()
    return {"label": label, "workers": workers, "startup_s": startup, "seconds": seconds,
            "cpu_s": main_cpu + sum(worker_cpu), "idle_estimate_s": idle_seconds, "threaded": threaded,
            "docs": len(texts),
            "tokens": sum(map(len, tokens)), "sha256": digest,
            "version": morph.BACKENDS[seg.backend].version() if seg.kind == "morpheme" else ""}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--file", type=Path, help="an NSMC-format file (id<TAB>text<TAB>label, header line) "
                                              "instead of ../shared/corpora/nsmc/ratings_test.txt")
    ap.add_argument("--limit", type=int, help="only the first N reviews")
    ap.add_argument("--only", help=f"comma-separated subset of {','.join(CONFIGS)}")
    ap.add_argument("--workers", type=int, help="the 'all cores' worker count [default: all cores]")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--measure", nargs=3, metavar=("LABEL", "WORKERS", "TEXTS"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.measure:  # child process
        label, workers, texts_file = args.measure
        print(json.dumps(measure(label, int(workers), texts_file)))
        return

    from pipeline.core.engine import DEFAULT_WORKERS
    texts, how = load_texts(args.file, args.limit)
    labels = args.only.split(",") if args.only else list(CONFIGS)
    many = args.workers or DEFAULT_WORKERS
    print(f"{len(texts):,} NSMC test reviews, {how}; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.2f} at start", flush=True)
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        texts_file = os.path.join(tmp, "texts.pkl")
        with open(texts_file, "wb") as fh:
            pickle.dump(texts, fh)
        for label in labels:
            for workers in dict.fromkeys((1, many)):
                out = subprocess.run([sys.executable, __file__, "--measure", label, str(workers), texts_file],
                                     capture_output=True, text=True, cwd=ROOT)
                if out.returncode:
                    sys.exit(f"{label} x{workers} failed:\n{out.stderr}")
                r = json.loads(out.stdout.strip().splitlines()[-1])
                results.append(r)
                print(f"  {label} x{workers}: {r['docs'] / r['seconds']:,.0f} docs/s "
                      f"(start-up {r['startup_s']:.2f} s)", flush=True)

    reference = {r["label"]: r["sha256"] for r in results if r["workers"] == 1}
    header = (f"{'tokenizer':<10} {'workers':>7} {'start-up s':>10} {'docs/s':>9} {'run s':>7} "
              f"{'200k s (extrap.)':>16} {'CPU s':>7} {'idle docs/s':>11} {'tok/doc':>7} {'same':>5}  version")
    print("\n" + header + "\n" + "-" * len(header))
    for r in results:
        rate = r["docs"] / r["seconds"]
        idle = f"{'~' if r['threaded'] else ''}{r['docs'] / r['idle_estimate_s']:,.0f}"
        same = "-" if r["workers"] == 1 else ("yes" if r["sha256"] == reference.get(r["label"]) else "NO")
        print(f"{r['label']:<10} {r['workers']:>7} {r['startup_s']:>10.2f} {rate:>9,.0f} {r['seconds']:>7.1f} "
              f"{r['startup_s'] + NSMC_DOCS / rate:>16.1f} {r['cpu_s']:>7.1f} {idle:>11} "
              f"{r['tokens'] / r['docs']:>7.1f} {same:>5}  {r['version']}")
    print("docs/s: measured wall clock, after start-up. CPU s: CPU time of all processes (parent and\n"
          "workers, every thread) during the analysis. idle docs/s: estimate for an otherwise idle\n"
          "machine with a core per worker, from the CPU times (see measure()); ~ = lower bound of time.")
    print(f"load average {os.getloadavg()[0]:.2f} at end")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
