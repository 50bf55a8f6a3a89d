"""Benchmark `ksent predict`: (a) latency to the first printed prediction, (b) batch throughput.

    .venv/bin/python tests/benchmarks/bench_predict.py --model artifacts/nsmc-morpheme-mecab

(a) runs the real entry point (`.venv/bin/ksent predict --model DIR "..."`, or
    `python -m pipeline` where there is no script) in a fresh process and times
    process start -> first line on stdout; then breaks one cold start down in-process.
(b) times Bundle.predict_proba on the 50,000 NSMC test reviews, read from the
    mirror with the corpus registry's reader, split into preprocessing and model time.
Not a pytest test (the name does not start with test_): it needs a trained bundle.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))
REVIEW = "배우들 연기가 정말 좋았고 스토리도 탄탄해서 시간 가는 줄 몰랐어요"


def entry_point() -> list[str]:
    script = Path(sys.executable).with_name("ksent")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "pipeline"]


def first_prediction_latency(model: Path, repeat: int) -> list[float]:
    """Seconds from starting `ksent predict` to its first line of output, per run."""
    times = []
    for _ in range(repeat):
        started = time.perf_counter()
        proc = subprocess.Popen([*entry_point(), "predict", "--model", str(model), REVIEW], cwd=REPO,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        line = proc.stdout.readline()
        elapsed = time.perf_counter() - started
        _, err = proc.communicate()
        if proc.returncode != 0 or not line:
            sys.exit(f"ksent predict failed (exit {proc.returncode}):\n{err[-2000:]}")
        times.append(elapsed)
        print(f"  {elapsed:6.2f} s  {line.strip()}")
    return times


def cold_start_breakdown(model: Path) -> None:
    """Where a cold start's time goes, in a fresh interpreter (imports are cached after the first)."""
    code = f"""
import time; t0 = time.perf_counter()
import keras; t1 = time.perf_counter()
from pipeline.bundle import load_bundle; b = load_bundle({str(model)!r}); t2 = time.perf_counter()
b.predict([{REVIEW!r}]); t3 = time.perf_counter()
b.predict([{REVIEW!r}]); t4 = time.perf_counter()
print(f"  import keras+tensorflow {{t1-t0:.2f}} s, load_bundle {{t2-t1:.2f}} s, "
      f"first predict {{t3-t2:.2f}} s, second predict {{(t4-t3)*1000:.0f}} ms")
"""
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, stderr=subprocess.DEVNULL)


def nsmc_test_texts(mirror: Path) -> list[str]:
    from pipeline.corpora import CORPORA

    df, problems = CORPORA["nsmc"].read(mirror / "nsmc")
    texts = df.loc[df["source"] == "test", "text"].tolist()
    if problems:
        print(f"  (reader: {sum(problems.values())} malformed rows skipped: {dict(problems)})")
    return texts


def throughput(model: Path, texts: list[str], batch_size: int, repeat: int) -> None:
    from pipeline.bundle import load_bundle

    bundle = load_bundle(model)
    bundle.predict_proba(texts[:2000], batch_size=batch_size)          # warm-up: trace the model function
    for _ in range(repeat):
        started = time.perf_counter()
        x = bundle.transform(texts)
        preprocessed = time.perf_counter()
        p = bundle.predict_ids(x, batch_size=batch_size)
        done = time.perf_counter()
        total = done - started
        print(f"  {len(texts):,} reviews in {total:.2f} s = {len(texts) / total:,.0f} reviews/s "
              f"(preprocessing {preprocessed - started:.2f} s, model {done - preprocessed:.2f} s = "
              f"{len(texts) / (done - preprocessed):,.0f} reviews/s); positive share {(p >= 0.5).mean():.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, help="bundle directory [default: the best NSMC bundle in "
                                                   "./artifacts, as `ksent predict` picks it]")
    parser.add_argument("--mirror", type=Path, default=REPO.parent / "shared" / "corpora",
                        help="folder holding nsmc/ratings_test.txt [default: %(default)s]")
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--limit", type=int, default=0, help="use only the first N test reviews (0 = all)")
    args = parser.parse_args()
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    from pipeline.bundle import default_model_dir

    model = (args.model or default_model_dir(REPO / "artifacts")).resolve()
    print(f"bundle: {model}  (cpu cores: {os.cpu_count()}, load average {os.getloadavg()[0]:.1f})")

    print(f"(a) process start -> first printed prediction: {' '.join(entry_point())} predict --model DIR '...'")
    latencies = first_prediction_latency(model, args.repeat)
    print(f"  median {statistics.median(latencies):.2f} s, best {min(latencies):.2f} s")
    cold_start_breakdown(model)

    texts = nsmc_test_texts(args.mirror)
    if args.limit:
        texts = texts[:args.limit]
    print(f"(b) Bundle.predict_proba throughput on {len(texts):,} NSMC test reviews, batch size {args.batch_size}")
    throughput(model, texts, args.batch_size, args.repeat)


if __name__ == "__main__":
    main()
