"""Benchmark `ksent serve`: requests/s, reviews/s and p50/p99 latency under N concurrent clients.

    .venv/bin/python tests/benchmarks/bench_serve.py --model artifacts/nsmc-morpheme-mecab
    .venv/bin/python tests/benchmarks/bench_serve.py --model DIR --seconds 5 --server-option=--max-batch=128
    .venv/bin/python tests/benchmarks/bench_serve.py --model DIR --trickle 300 --seconds 40   # slow clients

Starts the real server (`python -m pipeline serve --port 0`, loopback only) on the bundle,
then per scenario (single-review requests, 100-review requests) runs `--clients`
keep-alive clients for `--warmup` s unrecorded and `--seconds` s recorded, each sending
its next request when the last answer arrived. Stops by itself: at most
`--max-requests` requests per scenario and a hard deadline; the server gets SIGTERM at
the end (killed if it does not stop). Prints requests/s, reviews/s, p50/p99 latency,
the CPU time the server and this client used per scenario, and the server's peak
RSS (VmHWM from /proc). Reviews come from --reviews (NSMC's test file, column 2) or
are synthetic when it is absent.

Why a hand-written client: on a 2-core machine the load generator shares the cores
with the server, so it must cost far less per request than the server does. httpx or
requests spend a few hundred microseconds of Python per request (URL and header
objects, a state machine per response); at 1,000+ requests/s that is most of a core,
and the figure would measure the client. Here each request is pre-encoded bytes written
to an asyncio stream (uvloop when installed), and a response is read as "headers up to
a blank line, then Content-Length bytes": a few tens of microseconds. Its CPU share is
printed, so you can see it is not the bottleneck.

Targets (single-review requests, 32 clients): >= 1,000 requests/s and p99 <= 50 ms.
Not a pytest test (the name does not start with test_).
"""
from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import resource
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DEFAULT_MODEL = REPO / "artifacts" / "nsmc-morpheme-mecab"
DEFAULT_REVIEWS = REPO.parent / "shared" / "corpora" / "nsmc" / "ratings_test.txt"
TARGET_RPS, TARGET_P99_MS = 1000.0, 50.0
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def load_reviews(path: Path, limit: int = 20_000) -> tuple[list[str], str]:
    """Review texts from an NSMC-format file (id, document, label), or synthetic ones."""
    if path.is_file():
        reviews = []
        with path.open(encoding="utf-8") as lines:
            next(lines, None)                               # header
            for line in lines:
                columns = line.rstrip("\n").split("\t")
                if len(columns) >= 2 and columns[1].strip():
                    reviews.append(columns[1])
                if len(reviews) >= limit:
                    break
        if reviews:
            return reviews, f"{len(reviews)} reviews from {path}"
    rng = random.Random(0)
    words = "정말 재밌어요 최고의 영화 시간 아깝다 지루해요 배우 연기 스토리 감동 ㅋㅋㅋ".split()
    reviews = [" ".join(rng.choices(words, k=rng.randint(2, 12))) for _ in range(limit)]
    return reviews, f"{len(reviews)} synthetic reviews ({path} not found)"


def encode_requests(reviews: list[str], per_request: int, count: int) -> list[bytes]:
    """`count` pre-encoded keep-alive POST /predict requests of `per_request` reviews each."""
    requests = []
    for i in range(count):
        start = (i * per_request) % max(1, len(reviews) - per_request)
        body = json.dumps({"texts": reviews[start:start + per_request]}, ensure_ascii=False).encode()
        requests.append(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
                        b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)
    return requests


# --- the server ---------------------------------------------------------------------------------

def start_server(model: Path, options: list[str], timeout: float = 120.0) -> tuple[subprocess.Popen, int, str]:
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "serve", "--model", str(model), "--host", "127.0.0.1",
                             "--port", "0", *options], cwd=REPO, stdout=subprocess.PIPE, text=True)
    with selectors.DefaultSelector() as selector:
        selector.register(proc.stdout, selectors.EVENT_READ)
        if not selector.select(timeout):
            stop_server(proc)
            sys.exit(f"the server printed nothing in {timeout:.0f} s")
    banner = proc.stdout.readline().strip()
    if not banner.startswith("serving "):
        stop_server(proc)
        sys.exit(f"the server did not start (exit {proc.returncode}): {banner!r}")
    port = int(banner.split(" at ", 1)[1].split(" ", 1)[0].rsplit(":", 1)[1])
    return proc, port, banner


def stop_server(proc: subprocess.Popen) -> int | None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
    return proc.returncode


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process (all threads), from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def peak_rss_mb(pid: int) -> float | None:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return None


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


# --- the load generator -------------------------------------------------------------------------

class Totals:
    def __init__(self, cap: int):
        self.left = cap
        self.latencies: list[float] = []
        self.errors = 0
        self.first_error: str | None = None


async def one_client(port: int, requests: list[bytes], offset: int, stop_at: float, totals: Totals,
                     record: bool) -> None:
    """Keep-alive requests on one connection until `stop_at` or the request cap."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    clock = time.perf_counter
    i = offset
    try:
        while totals.left > 0 and clock() < stop_at:
            totals.left -= 1
            request = requests[i % len(requests)]
            i += 1
            started = clock()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            at = head.lower().find(b"content-length:")
            length = int(head[at + 15:head.index(b"\r\n", at)]) if at >= 0 else 0
            body = await reader.readexactly(length)
            if record:
                totals.latencies.append(clock() - started)
            if head[9:12] != b"200":
                totals.errors += 1
                totals.first_error = totals.first_error or (head[:12] + body[:200]).decode(errors="replace")
    finally:
        writer.close()


async def load(port: int, requests: list[bytes], clients: int, seconds: float, totals: Totals, record: bool) -> float:
    """Run `clients` clients for `seconds` (bounded by a hard deadline); returns the elapsed time."""
    started = time.perf_counter()
    stop_at = started + seconds
    tasks = [one_client(port, requests, k * 7919, stop_at, totals, record) for k in range(clients)]
    await asyncio.wait_for(asyncio.gather(*tasks), timeout=seconds + 60)
    return time.perf_counter() - started


def percentile(sorted_values: list[float], q: float) -> float:
    if not sorted_values:
        return float("nan")
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def check_answers(port: int, request: bytes, expected: int) -> None:
    """One request outside the timed loop: the server answers with one prediction per review."""
    async def fetch() -> bytes:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        at = head.lower().find(b"content-length:")
        body = await reader.readexactly(int(head[at + 15:head.index(b"\r\n", at)]))
        writer.close()
        return body

    predictions = json.loads(asyncio.run(fetch()))["predictions"]
    if len(predictions) != expected:
        sys.exit(f"expected {expected} predictions, got {len(predictions)}")


# --- trickling clients: what a slow or hostile client costs the others --------------------------------

async def trickle_load(port: int, connections: int, seconds: float, body_kb: int) -> dict:
    """`connections` clients that trickle: half send a request's headers a byte a second, half send the headers
    and `body_kb` kB of a declared 1,000,000-byte body (the default --max-body-bytes) at once, then a byte a
    second (holding that much memory in the server until its body deadline). Meanwhile a fresh connection asks
    GET /health every 20 ms for `seconds`: its latencies and failures, and how many trickling connections the
    server closed (deadlines) by the end."""
    head = b"GET /health HTTP/1.1\r\nHost: bench\r\n"
    body_head = (f"POST /predict HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
                 f"Content-Length: {1_000_000}\r\n\r\n").encode() + b'{"texts": ["' + b"x" * (body_kb << 10)
    writers, closed = [], 0

    async def open_one(i: int):
        try:
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            return None
        writer.write(head if i % 2 else body_head)
        return reader, writer

    opened = [c for c in await asyncio.gather(*(open_one(i) for i in range(connections))) if c]
    writers = [w for _, w in opened]

    async def trickle(stop_at: float) -> None:
        while time.monotonic() < stop_at:
            for writer in writers:
                if not writer.is_closing():
                    writer.write(b"x")
            await asyncio.sleep(1.0)

    async def health(stop_at: float) -> tuple[list[float], int]:
        latencies, failures = [], 0
        request = b"GET /health HTTP/1.1\r\nHost: bench\r\nConnection: close\r\n\r\n"
        while time.monotonic() < stop_at:
            begin = time.monotonic()
            try:
                reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", port), 5)
                writer.write(request)
                answer = await asyncio.wait_for(reader.read(), 5)
                writer.close()
                if answer.startswith(b"HTTP/1.1 200"):
                    latencies.append(time.monotonic() - begin)
                else:
                    failures += 1
            except (OSError, asyncio.TimeoutError):
                failures += 1
            await asyncio.sleep(0.02)
        return latencies, failures

    stop_at = time.monotonic() + seconds
    _, (latencies, failures) = await asyncio.gather(trickle(stop_at), health(stop_at))
    for reader, writer in opened:
        closed += reader.at_eof() or writer.is_closing()
        writer.close()
    latencies.sort()
    return {"opened": len(opened), "closed_by_server": closed, "health": len(latencies), "health_failures": failures,
            "p50_ms": percentile(latencies, 0.5) * 1000 if latencies else None,
            "p99_ms": percentile(latencies, 0.99) * 1000 if latencies else None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, default=DEFAULT_MODEL if DEFAULT_MODEL.is_dir() else None,
                        help=f"bundle directory [default: {DEFAULT_MODEL} if present]")
    parser.add_argument("--reviews", type=Path, default=DEFAULT_REVIEWS, help="NSMC-format file of reviews")
    parser.add_argument("--clients", type=int, default=32, help="concurrent keep-alive clients")
    parser.add_argument("--seconds", type=float, default=10.0, help="recorded seconds per scenario")
    parser.add_argument("--warmup", type=float, default=2.0, help="unrecorded seconds before each scenario")
    parser.add_argument("--max-requests", type=int, default=200_000, help="hard cap of requests per scenario")
    parser.add_argument("--sizes", default="1,100", help="reviews per request, one scenario each")
    parser.add_argument("--trickle", type=int, default=0, metavar="N",
                        help="instead: N trickling connections for --seconds, and /health latency meanwhile")
    parser.add_argument("--body-kb", type=int, default=900, help="with --trickle: kB of body each body trickler sends")
    parser.add_argument("--server-option", action="append", default=[],
                        help="extra `ksent serve` option, e.g. --server-option=--max-batch=128 (repeatable)")
    args = parser.parse_args()
    if args.model is None:
        sys.exit(f"no bundle at {DEFAULT_MODEL}: pass --model DIR")
    if not 1 <= args.clients <= 1000 or not 0 < args.seconds <= 600:
        sys.exit("--clients must be 1..1000 and --seconds 0..600")
    try:
        import uvloop
        asyncio.set_event_loop_policy(uvloop.EventLoopPolicy())
    except ImportError:
        pass

    reviews, source = load_reviews(args.reviews)
    sizes = [int(size) for size in args.sizes.split(",")]
    load_before = os.getloadavg()[0]
    proc, port, banner = start_server(args.model, args.server_option)
    print(f"{banner}\n{source}; {args.clients} clients, {args.warmup:g} s warm-up + {args.seconds:g} s per scenario; "
          f"{os.cpu_count()} cores, load average before {load_before:.2f}; server options: "
          f"{' '.join(args.server_option) or 'defaults'}")
    if args.trickle:
        try:
            before = peak_rss_mb(proc.pid)
            result = asyncio.run(trickle_load(port, args.trickle, args.seconds, args.body_kb))
            peak = peak_rss_mb(proc.pid)
        finally:
            exit_code = stop_server(proc)
        print(f"{result['opened']} trickling connections (half headers, half {args.body_kb} kB bodies, a byte a "
              f"second) for {args.seconds:g} s: {result['closed_by_server']} closed by the server; GET /health "
              f"meanwhile: {result['health']} answered, {result['health_failures']} failed, p50 "
              f"{result['p50_ms'] or 0:.1f} ms, p99 {result['p99_ms'] or 0:.1f} ms; server peak RSS {before:.0f} -> "
              f"{peak:.0f} MB; exit code after SIGTERM: {exit_code}")
        return
    rows = []
    try:
        for size in sizes:
            requests = encode_requests(reviews, size, 1000 if size == 1 else 200)
            check_answers(port, requests[0], size)
            asyncio.run(load(port, requests, args.clients, args.warmup, Totals(args.max_requests), record=False))
            totals = Totals(args.max_requests)
            server_cpu, client_cpu = cpu_seconds(proc.pid), own_cpu_seconds()
            elapsed = asyncio.run(load(port, requests, args.clients, args.seconds, totals, record=True))
            server_cpu, client_cpu = cpu_seconds(proc.pid) - server_cpu, own_cpu_seconds() - client_cpu
            latencies = sorted(totals.latencies)
            rows.append((size, len(latencies), len(latencies) / elapsed, len(latencies) * size / elapsed,
                         percentile(latencies, 0.50) * 1000, percentile(latencies, 0.99) * 1000, totals.errors,
                         server_cpu / elapsed, client_cpu / elapsed))
            if totals.first_error:
                print(f"  first error ({size}/request): {totals.first_error}")
        peak = peak_rss_mb(proc.pid)
    finally:
        exit_code = stop_server(proc)

    print(f"\n{'reviews/request':>15} {'requests':>9} {'requests/s':>11} {'reviews/s':>10} {'p50 ms':>8} "
          f"{'p99 ms':>8} {'errors':>6} {'server CPU':>10} {'client CPU':>10}")
    for size, count, rps, reviews_per_s, p50, p99, errors, server_share, client_share in rows:
        print(f"{size:>15} {count:>9} {rps:>11.1f} {reviews_per_s:>10.1f} {p50:>8.1f} {p99:>8.1f} {errors:>6} "
              f"{server_share:>9.0%} {client_share:>10.0%}")
    print(f"server peak RSS: {peak:.0f} MB; server exit code after SIGTERM: {exit_code}")
    single = next((row for row in rows if row[0] == 1), None)
    if single is not None and args.clients == 32:
        print(f"targets (1 review/request, 32 clients): >= {TARGET_RPS:,.0f} requests/s: "
              f"{'met' if single[2] >= TARGET_RPS else 'NOT met'} ({single[2]:,.0f}); p99 <= {TARGET_P99_MS:g} ms: "
              f"{'met' if single[5] <= TARGET_P99_MS else 'NOT met'} ({single[5]:.1f} ms)")


if __name__ == "__main__":
    main()
