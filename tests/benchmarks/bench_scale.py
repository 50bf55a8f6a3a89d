"""The data stages at scale (issue 11): download, clean, dedupe, split, tokenize (mecab) and pad
on synthetic NSMC-format corpora (scale_corpus.py) of 200k, 1M and 5M reviews, with 1 and 2 workers.

Each run is a fresh process on a fresh data folder. It prints, per stage, the seconds, the
documents per second and the peak memory of the main process and of each Dask worker
process; then the speed-up from 1 to 2 workers and how peak memory per worker grows with
the corpus. Memory comes from the OS: the kernel's peak resident set (VmHWM in
/proc/<pid>/status) of the main process and of every process it started, sampled every
0.2 s while each stage runs (workers live for one stage, so each stage gets its own; the
main process's peak is reset before each stage through /proc/self/clear_refs).

    .venv/bin/python tests/benchmarks/bench_scale.py [--runs 200000:1,200000:2,1000000:1,1000000:2,5000000:2]
        [--dir /tmp/ksent-scale] [--source ../shared/corpora/nsmc/ratings_train.txt] [--format tsv|csv]

--format csv writes the same reviews as a declared CSV corpus (header id,review,label; RFC 4180
quoting), one review in 20 given a quoted comma, a doubled quote and a newline inside its field,
so that clean must cut the file only between rows (pipeline.corpora.readers.quoted_blocks).

The test file of each corpus is a quarter of its size (as NSMC's 50k to 150k), made the
same way with another seed. Run it on a quiet machine: it uses every core it is given.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
STAGES = ("download", "clean", "dedupe", "split", "tokenize", "pad")
DEFAULT_RUNS = "200000:1,200000:2,1000000:1,1000000:2,5000000:2"


CSV_DECLARATION = """
description = "synthetic scale corpus, quoted CSV"
text = "review"
id = "id"
format = {{ type = "csv" }}
label = {{ column = "label", positive = [1], negative = [0] }}
[[files]]
url = "http://127.0.0.1:9/scale/train.csv"
role = "train"
sha256 = "{train}"
[[files]]
url = "http://127.0.0.1:9/scale/test.csv"
role = "test"
sha256 = "{test}"
"""


def to_csv(tsv: Path, target: Path) -> None:
    """The NSMC-format file `tsv` as a quoted CSV; every 20th review gets `, "인용" 그리고` and a newline."""
    import csv

    from pipeline.core.files import atomic_path

    with open(tsv, encoding="utf-8") as src, atomic_path(target) as tmp, \
            open(tmp, "w", encoding="utf-8", newline="") as out:
        writer = csv.writer(out, lineterminator="\n")
        writer.writerow(next(src).rstrip("\n").replace("document", "review").split("\t"))
        for i, line in enumerate(src):
            doc_id, text, label = line.rstrip("\n").split("\t")
            writer.writerow([doc_id, text + (', "인용" 그리고\n다음 줄' if i % 20 == 0 else ""), label])


def make_corpus(folder: Path, rows: int, source: Path, fmt: str = "tsv") -> Path:
    """A mirror folder with scale/ratings_train.txt and scale/ratings_test.txt (3:1), made once per size;
    for --format csv also scale/train.csv and scale/test.csv."""
    sys.path.insert(0, str(HERE))
    from scale_corpus import generate

    mirror = folder / "mirror"
    files = {"ratings_train.txt": (rows - rows // 4, 0), "ratings_test.txt": (rows // 4, 1)}
    for name, (n, seed) in files.items():
        target = mirror / "scale" / name
        if not target.exists():
            generate(source, n, seed, target)
        csv_target = mirror / "scale" / name.replace("ratings_", "").replace(".txt", ".csv")
        if fmt == "csv" and not csv_target.exists():
            to_csv(target, csv_target)
    return mirror


def register(mirror: Path, fmt: str = "tsv") -> None:
    from pipeline import corpora
    from pipeline.core.files import sha256_file

    if fmt == "csv":
        from pipeline.corpora.declaration import parse_declaration

        text = CSV_DECLARATION.format(train=sha256_file(mirror / "scale" / "train.csv"),
                                      test=sha256_file(mirror / "scale" / "test.csv"))
        corpora.CORPORA["scale"] = parse_declaration("scale", text, mirror / "scale.toml")
        return

    files = tuple(corpora.CorpusFile(name, f"http://127.0.0.1:9/scale/{name}", source,
                                     sha256=sha256_file(mirror / "scale" / name))
                  for name, source in (("ratings_train.txt", "train"), ("ratings_test.txt", "test")))
    corpora.CORPORA["scale"] = dataclasses.replace(corpora.CORPORA["nsmc"], name="scale", unlabeled=None,
                                                   description="synthetic scale corpus", files=files)


def _peak_kib(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def _reset_peak() -> None:
    """Start this process's VmHWM afresh (Linux: "5" to clear_refs resets the peak RSS)."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


class PeakSampler:
    """The kernel's peak RSS of this process and of every descendant, sampled while a stage runs."""

    def __init__(self, interval: float = 0.2):
        import psutil

        self._me = psutil.Process()
        self._interval = interval
        self.peaks: dict[int, int] = {}
        self.names: dict[int, str] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _sample(self) -> None:
        import psutil

        for proc in [self._me, *self._me.children(recursive=True)]:
            kib = _peak_kib(proc.pid)
            if kib > self.peaks.get(proc.pid, 0):
                self.peaks[proc.pid] = kib
                if proc.pid not in self.names:
                    try:
                        self.names[proc.pid] = " ".join(proc.cmdline())
                    except psutil.Error:
                        self.names[proc.pid] = "?"

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self._sample()

    def __enter__(self) -> PeakSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def workers(self) -> list[int]:
        """Peak KiB of each Dask worker process (spawned Python children doing the work)."""
        me = self._me.pid
        return sorted((kib for pid, kib in self.peaks.items()
                       if pid != me and "multiprocessing" in self.names.get(pid, "")
                       and "resource_tracker" not in self.names.get(pid, "")), reverse=True)


def run_once(data: Path, mirror: Path, workers: int, fmt: str = "tsv") -> dict:
    """All data stages in this process (one fresh data folder); seconds and peak memory per stage."""
    from pipeline.stages.clean import clean
    from pipeline.stages.dedupe import dedupe
    from pipeline.stages.download import download
    from pipeline.stages.pad import pad
    from pipeline.stages.split import split
    from pipeline.stages.tokenize import tokenize
    from pipeline.text.segment import Segmenter

    register(mirror, fmt)
    mecab = Segmenter("morpheme", backend="mecab")
    quiet = {"data_dir": data, "echo": lambda line: print(line, file=sys.stderr, flush=True)}
    calls = {"download": lambda: download("scale", mirror=str(mirror), **quiet),
             "clean": lambda: clean("scale", workers=workers, **quiet),
             "dedupe": lambda: dedupe("scale", workers=workers, **quiet),
             "split": lambda: split("scale", **quiet),
             "tokenize": lambda: tokenize("scale", mecab, workers=workers, **quiet),
             "pad": lambda: pad("scale", mecab.name(), pretrained_words=0, workers=workers, **quiet)}
    out = {}
    for stage in STAGES:
        _reset_peak()
        with PeakSampler() as sampler:
            started = time.perf_counter()
            result = calls[stage]()
            seconds = time.perf_counter() - started
            sampler._sample()
        out[stage] = {"seconds": round(seconds, 2), "main_peak_mib": round(_peak_kib(os.getpid()) / 1024),
                      "worker_peaks_mib": [round(k / 1024) for k in sampler.workers()],
                      "engine": result.counts.get("engine", "1 process"),
                      "docs": (result.counts.get("docs") or result.counts.get("rows_out")
                               or sum(result.counts.get(f"{split}_rows", 0) for split in ("train", "val", "test")))}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", default=DEFAULT_RUNS, help=f"SIZE:WORKERS,... [default: {DEFAULT_RUNS}]")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/ksent-scale"), help="scratch folder (kept: corpora)")
    ap.add_argument("--source", type=Path, default=REPO.parent / "shared" / "corpora" / "nsmc" / "ratings_train.txt")
    ap.add_argument("--format", choices=("tsv", "csv"), default="tsv",
                    help="the corpus's file format: NSMC's TSV, or a declared quoted CSV [default: tsv]")
    ap.add_argument("--run-one", nargs=4, metavar=("DATA", "MIRROR", "WORKERS", "FORMAT"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.run_one:
        data, mirror, workers, fmt = args.run_one
        print(json.dumps(run_once(Path(data), Path(mirror), int(workers), fmt)))
        return

    runs = [tuple(int(v) for v in item.split(":")) for item in args.runs.split(",")]
    results = {}
    for size, workers in runs:
        folder = args.dir / str(size)
        mirror = make_corpus(folder, size, args.source, args.format)
        data = folder / f"data-{workers}"
        shutil.rmtree(data, ignore_errors=True)
        proc = subprocess.run([sys.executable, __file__, "--run-one", str(data), str(mirror), str(workers),
                               args.format],
                              capture_output=True, text=True)
        if proc.returncode:
            sys.exit(f"run {size}:{workers} failed:\n{proc.stderr[-3000:]}")
        results[(size, workers)] = json.loads(proc.stdout.strip().splitlines()[-1])
        shutil.rmtree(data, ignore_errors=True)
        r = results[(size, workers)]
        print(f"\n== {size:,} reviews ({args.format}), {workers} worker{'s' if workers > 1 else ''} ==")
        print(f"{'stage':9s} {'seconds':>8s} {'docs/s':>9s} {'main peak MiB':>14s} {'worker peaks MiB':>18s}  engine")
        for stage in STAGES:
            s = r[stage]
            rate = f"{s['docs'] / s['seconds']:,.0f}" if s["docs"] and stage in ("tokenize", "pad") else ""
            peaks = ",".join(map(str, s["worker_peaks_mib"])) or "-"
            print(f"{stage:9s} {s['seconds']:8.1f} {rate:>9s} {s['main_peak_mib']:14,d} {peaks:>18s}  {s['engine']}")
        total = sum(r[s]["seconds"] for s in STAGES)
        print(f"{'total':9s} {total:8.1f} {size / total:9,.0f}  (reviews per second through download -> pad)")

    print("\n== summary ==")
    sizes = sorted({size for size, _ in runs})
    for size in sizes:
        if (size, 1) in results and (size, 2) in results:
            one, two = results[(size, 1)], results[(size, 2)]
            tok = one["tokenize"]["seconds"] / two["tokenize"]["seconds"]
            chain = sum(one[s]["seconds"] for s in STAGES) / sum(two[s]["seconds"] for s in STAGES)
            clean = one["clean"]["seconds"] / two["clean"]["seconds"]
            print(f"{size:>9,}: speed-up 1 -> 2 workers: clean {clean:.2f}x, tokenize {tok:.2f}x, pad "
                  f"{one['pad']['seconds'] / two['pad']['seconds']:.2f}x, download -> pad {chain:.2f}x")
    two_worker = [size for size in sizes if (size, 2) in results]
    if len(two_worker) > 1:
        lo, hi = two_worker[0], two_worker[-1]
        for stage in ("clean", "dedupe", "tokenize", "pad"):
            a, b = (max(results[(s, 2)][stage]["worker_peaks_mib"] or [0]) for s in (lo, hi))
            if a and b:
                print(f"peak memory per worker, {stage}, {lo:,} -> {hi:,} reviews: {a} -> {b} MiB ({b / a:.2f}x)")
        for stage in STAGES[1:]:
            a, b = (results[(s, 2)][stage]["main_peak_mib"] for s in (lo, hi))
            print(f"peak memory of the main process, {stage}, {lo:,} -> {hi:,} reviews: {a:,} -> {b:,} MiB "
                  f"({b / a:.2f}x)")


if __name__ == "__main__":
    main()
