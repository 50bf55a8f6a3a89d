"""`ksent serve`: real HTTP to the real server in a subprocess, and the micro-batcher in-process.

The server runs as `python -m pipeline serve --port 0` on a tiny word bundle (conftest's
`word_bundle`, trained once per session); its port is read from the line it prints once listening. Every wait is bounded
and every server process is killed in teardown.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from pipeline.apps.batching import BatcherClosed, MicroBatcher
from tests.helpers import ServerProcess, cli_predict_json

pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")

REPO = Path(__file__).resolve().parents[1]
MAX_TEXTS, MAX_BODY_BYTES = 50, 20_000          # small limits, so that going over them is cheap
TEXTS = ["정말 재밌어요 최고의 영화", "시간 아깝다 보지 마세요", "", "   ", "🙂🙂🙂", "Great movie!",
         "그냥 진짜 지루해요 ㅋㅋㅋㅋ", "탭\t과 줄\n바꿈", "강력 추천 ^^"]


# --- fixtures: a bundle and servers -------------------------------------------------------------

@pytest.fixture(scope="module")
def server(word_bundle):
    # a request waits up to 20 ms for company: makes combined batches in the concurrency test all but certain
    srv = ServerProcess(word_bundle, "--max-texts", str(MAX_TEXTS), "--max-body-bytes", str(MAX_BODY_BYTES),
                        "--max-wait-ms", "20", "--max-batch", "64")
    yield srv
    srv.kill()


@pytest.fixture
def client(server):
    with httpx.Client(base_url=server.url, timeout=20.0) as http:
        yield http


def raw_request(port: int, data: bytes, timeout: float = 10.0) -> tuple[int, dict[str, str], bytes]:
    """Send bytes on a fresh connection, read one response: status, headers (lower-case), body."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        sock.sendall(data)
        return read_response(sock)


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before a response: {buffer!r}"
        buffer += chunk
    head, body = buffer.split(b"\r\n\r\n", 1)
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in header_lines)}
    length = int(headers["content-length"])
    while len(body) < length:
        chunk = sock.recv(65536)
        assert chunk, "connection closed in the middle of a response body"
        body += chunk
    return int(status_line.split()[1]), headers, body


def post_head(path: str, length: int | None = None, chunked: bool = False) -> bytes:
    framing = "Transfer-Encoding: chunked" if chunked else f"Content-Length: {length}"
    return (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n{framing}\r\n\r\n"
            ).encode()


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


# --- predictions --------------------------------------------------------------------------------

def test_predictions_equal_ksent_predict_json(server, client, word_bundle):
    expected = cli_predict_json(word_bundle, TEXTS)
    assert len(expected) == len(TEXTS)

    response = client.post("/predict", json={"texts": TEXTS})
    assert response.status_code == 200 and response.headers["content-type"] == "application/json"
    assert response.json() == {"model": "tiny-word", "predictions": expected}

    # TF Serving form: [P(positive)] per instance, strings or {"text": ...} objects alike
    probabilities = [[record["probability"]] for record in expected]
    for instances in (TEXTS, [{"text": t} for t in TEXTS]):
        response = client.post("/v1/models/tiny-word:predict", json={"instances": instances})
        assert response.status_code == 200
        assert response.json() == {"predictions": probabilities}
    response = client.post("/v1/models/tiny-word:predict",
                           json={"instances": TEXTS[:2], "signature_name": "serving_default"})
    assert response.json() == {"predictions": probabilities[:2]}


def test_the_int8_runtime_is_served_on_request_and_answers_as_ksent_predict_does(word_bundle):
    srv = ServerProcess(word_bundle, "--runtime", "onnx-int8")
    try:
        assert "(onnxruntime-int8)" in srv.banner
        with httpx.Client(base_url=srv.url, timeout=20) as http:
            response = http.post("/predict", json={"texts": TEXTS})
            status = http.get("/v1/models/tiny-word").json()
    finally:
        srv.kill()
    assert response.status_code == 200 and status["metadata"]["runtime"] == "onnxruntime-int8"
    # one request, one batch: the same 8-bit scales as the command's one batch, so the same numbers
    assert response.json()["predictions"] == cli_predict_json(word_bundle, TEXTS, "--runtime", "onnx-int8")


def test_empty_list_and_explain(client):
    assert client.post("/predict", json={"texts": []}).json() == {"model": "tiny-word", "predictions": []}
    assert client.post("/v1/models/tiny-word:predict", json={"instances": []}).json() == {"predictions": []}
    with_bom = client.post("/predict", content=b"\xef\xbb\xbf" + json.dumps({"texts": TEXTS[:1]}).encode())
    assert with_bom.status_code == 200 and with_bom.json()["predictions"][0]["text"] == TEXTS[0]

    plain = client.post("/predict", json={"texts": TEXTS[:3]}).json()["predictions"]
    explained = client.post("/predict", json={"texts": TEXTS[:3], "explain": True})
    assert explained.status_code == 200, explained.text
    records = explained.json()["predictions"]
    assert all(isinstance(record.pop("explanation"), dict) for record in records)
    assert records == plain


def test_health_model_status_metadata_and_openapi(client, word_bundle):
    assert client.get("/health").json() == {"status": "ok", "model": "tiny-word"}

    status = client.get("/v1/models/tiny-word").json()
    assert status["model_version_status"] == [{"version": "1", "state": "AVAILABLE",
                                               "status": {"error_code": "OK", "error_message": ""}}]
    metrics = json.loads((word_bundle / "metrics.json").read_text(encoding="utf-8"))
    assert status["metadata"]["metrics"]["accuracy"] == metrics["accuracy"]
    assert status["metadata"]["corpus"] == "tiny" and status["metadata"]["tokenization"] == "word"
    assert status["limits"]["max_texts"] == MAX_TEXTS and status["limits"]["max_body_bytes"] == MAX_BODY_BYTES

    signature = client.get("/v1/models/tiny-word/metadata").json()["metadata"]["signature_def"]["signature_def"]
    assert signature["serving_default"]["outputs"]["probability"]["dtype"] == "DT_FLOAT"

    schema = client.get("/openapi.json").json()
    assert {"/predict", "/v1/models/{model_name}:predict", "/health"} <= set(schema["paths"])
    body_schema = schema["paths"]["/predict"]["post"]["requestBody"]["content"]["application/json"]["schema"]
    assert body_schema["required"] == ["texts"] and body_schema["properties"]["texts"]["type"] == "array"
    docs = client.get("/docs")
    assert docs.status_code == 200 and "swagger" in docs.text.lower()
    # the documentation pages load every script and style from this server (no CDN: they work offline)
    import re

    for page in ("/docs", "/redoc"):
        html = client.get(page).text
        assets = re.findall(r'(?:src|href)="([^"]+)"', html)
        assert assets and not [a for a in assets if a.startswith(("http:", "https:", "//"))], (page, assets)
        for asset in assets:
            got = client.get(asset)
            assert got.status_code == 200 and len(got.content) > 100, (page, asset)


# --- errors -------------------------------------------------------------------------------------

TOO_MANY = json.dumps({"texts": ["좋아요"] * (MAX_TEXTS + 1)}).encode()
TOO_LARGE = json.dumps({"texts": ["가" * 1000] * 21}, ensure_ascii=False).encode()       # ~63 KB > 20 KB

ERRORS = [  # (path, body, status, field)
    ("/predict", b'{"texts": ["a"', 400, "body"),
    ("/predict", b'{"texts": ["\xff\xfe"]}', 400, "body"),                 # not UTF-8
    ("/predict", "{\"texts\": [\"영화\"]}".encode("cp949"), 400, "body"),   # Korean in the legacy encoding
    ("/predict", b"", 400, "body"),
    ("/predict", b'["a", "b"]', 422, "body"),
    ("/predict", b'{"text": ["a"]}', 422, "texts"),                        # missing (a typo)
    ("/predict", b'{"texts": "a"}', 422, "texts"),
    ("/predict", b'{"texts": ["a", 3]}', 422, "texts.1"),
    ("/predict", b'{"texts": ["a", null]}', 422, "texts.1"),
    ("/predict", b'{"texts": ["a"], "explain": "yes"}', 422, "explain"),
    ("/predict", b'{"texts": ["a"], "explain": 1}', 422, "explain"),
    ("/predict", b'{"texts": ["ok", "\\ud800"]}', 422, "texts.1"),          # unpaired surrogate via an escape
    ("/predict", TOO_MANY, 422, "texts"),
    ("/predict", TOO_LARGE, 413, "body"),
    ("/v1/models/tiny-word:predict", b'{"texts": ["a"]}', 422, "instances"),
    ("/v1/models/tiny-word:predict", b'{"instances": [1]}', 422, "instances.0"),
    ("/v1/models/tiny-word:predict", b'{"instances": ["a"], "signature_name": "other"}', 422, "signature_name"),
    ("/v1/models/other:predict", b'{"instances": ["a"]}', 404, "model"),
    ("/predict", b'{"texts": [' + b"1" * 5000 + b"]}", 400, "body"),       # a number json will not convert
    ("/predict", b'{"texts": [1e999999]}', 422, "texts.0"),               # inf: a number, not a text
]


@pytest.mark.parametrize(("path", "body", "status", "field"), ERRORS,
                         ids=[f"{status}-{field}-{i}" for i, (_, _, status, field) in enumerate(ERRORS)])
def test_bad_requests_get_json_errors_naming_the_field(client, path, body, status, field):
    response = client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == status, response.text
    error = response.json()
    assert error["field"] == field
    assert field in error["error"]                                          # the message says where, too


def test_unknown_route_and_method_are_json_errors(client):
    response = client.get("/nowhere")
    assert response.status_code == 404 and "/nowhere" in response.json()["error"]
    response = client.get("/predict")
    assert response.status_code == 405 and "error" in response.json()


def test_server_keeps_serving_after_malformed_requests(server, client):
    expected = client.post("/predict", json={"texts": TEXTS}).json()
    # on one keep-alive connection: every malformed body, then a good request
    for path, body, status, _ in ERRORS:
        if status != 413:                       # a 413 closes its connection (the rest of the body is not read)
            assert client.post(path, content=body).status_code == status
    assert client.post("/predict", json={"texts": TEXTS}).json() == expected
    # garbage that is not HTTP, and a connection dropped in the middle of a body
    status, _, _ = raw_request(server.port, b"NOT HTTP AT ALL\r\n\r\n")
    assert status == 400
    with socket.create_connection(("127.0.0.1", server.port), timeout=5) as sock:
        sock.sendall(post_head("/predict", length=1000) + b'{"texts": [')
    assert client.post("/predict", json={"texts": TEXTS}).json() == expected
    assert client.get("/health").status_code == 200
    assert "Traceback" not in "".join(server.stderr)


def test_body_limit_counts_chunked_bodies_without_reading_them_to_the_end(server):
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(post_head("/predict", chunked=True) + chunk(b'{"texts": ["') + chunk(b"a" * 8192) * 3)
        # the body is still open (no last chunk): the server answers after MAX_BODY_BYTES, not at the end
        status, headers, body = read_response(sock)
        assert status == 413 and json.loads(body)["field"] == "body"
        assert headers.get("connection") == "close"
    # Content-Length over the limit: 413 before the body is sent at all
    status, headers, body = raw_request(server.port, post_head("/predict", length=MAX_BODY_BYTES + 1))
    assert status == 413 and json.loads(body)["limit"] == MAX_BODY_BYTES
    # a chunked body under the limit is fine
    payload = json.dumps({"texts": TEXTS[:2]}).encode()
    status, _, body = raw_request(server.port, post_head("/predict", chunked=True) + chunk(payload[:7])
                                  + chunk(payload[7:]) + b"0\r\n\r\n")
    assert status == 200 and len(json.loads(body)["predictions"]) == 2


# --- concurrency --------------------------------------------------------------------------------

def test_concurrent_requests_get_their_own_answers(client, server):
    pool_texts = [f"{a} {b}" for a in TEXTS for b in ("최고의 영화", "최악이다", "음악", "")]
    assert len(set(pool_texts)) == len(pool_texts) <= MAX_TEXTS
    records = client.post("/predict", json={"texts": pool_texts}).json()["predictions"]
    expected = {record["text"]: record["probability"] for record in records}
    before = client.get("/v1/models/tiny-word").json()["batching"]
    start = threading.Barrier(20)

    def one_client(i: int) -> tuple[list[str], list[dict]]:
        texts = [pool_texts[(i * 7 + k) % len(pool_texts)] for k in range(1 + i % 5)]
        with httpx.Client(base_url=server.url, timeout=20.0) as http:
            start.wait(timeout=20)
            results = []
            for _ in range(3):
                results.extend(http.post("/predict", json={"texts": texts}).json()["predictions"])
        return texts * 3, results

    with ThreadPoolExecutor(20) as threads:
        answers = list(threads.map(one_client, range(20)))
    for texts, records in answers:
        assert [r["text"] for r in records] == texts                     # its own texts, in order
        for record in records:
            assert record["probability"] == pytest.approx(expected[record["text"]], abs=1e-6)
    after = client.get("/v1/models/tiny-word").json()["batching"]
    calls, texts_done = after["model_calls"] - before["model_calls"], after["texts"] - before["texts"]
    assert texts_done == sum(len(t) for t, _ in answers)
    assert calls < 60, f"60 requests took {calls} model calls: nothing was batched together"


# --- shutdown and start-up errors ----------------------------------------------------------------

def wait_until_refused(port: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except ConnectionRefusedError:
            return
        time.sleep(0.05)
    raise AssertionError(f"port {port} still accepts connections {timeout} s after the stop signal")


@pytest.mark.parametrize("stop_signal", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_stop_signal_lets_the_request_in_flight_finish(word_bundle, stop_signal):
    srv = ServerProcess(word_bundle)
    try:
        payload = json.dumps({"texts": TEXTS}, ensure_ascii=False).encode()
        half = len(payload) // 2
        with socket.create_connection(("127.0.0.1", srv.port), timeout=20) as sock:
            sock.sendall(post_head("/predict", length=len(payload)) + payload[:half])
            # the server has taken the request once it answered a later one (one event loop, in order)
            with httpx.Client(base_url=srv.url, timeout=10) as http:
                expected = http.post("/predict", json={"texts": TEXTS}).json()
            time.sleep(0.2)
            srv.proc.send_signal(stop_signal)
            wait_until_refused(srv.port, timeout=10)                     # no longer accepting...
            assert srv.proc.poll() is None                               # ...but still running for us
            sock.sendall(payload[half:])
            status, headers, body = read_response(sock)
        assert status == 200 and json.loads(body) == expected
        assert headers.get("connection") == "close"
        assert srv.proc.wait(timeout=20) == 0
        assert srv.next_line(5) == "stopped"
        assert "Traceback" not in "".join(srv.stderr)
    finally:
        srv.kill()


def test_start_up_errors_are_one_line(tmp_path):
    done = subprocess.run([sys.executable, "-m", "pipeline", "serve", "--model", str(tmp_path / "none"),
                           "--port", "0"], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and done.stderr.startswith("Error: no model bundle")
    assert "Traceback" not in done.stderr and done.stdout == ""

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        done = subprocess.run([sys.executable, "-m", "pipeline", "serve", "--model", str(tmp_path / "none"),
                               "--port", str(busy.getsockname()[1])], cwd=REPO, capture_output=True, text=True,
                              timeout=60)
    assert done.returncode == 1 and "cannot listen on 127.0.0.1" in done.stderr and "--port" in done.stderr

    done = subprocess.run([sys.executable, "-m", "pipeline", "serve", "--name", "a/b", "--port", "0"], cwd=REPO,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "--name" in done.stderr


# --- the micro-batcher, in-process ---------------------------------------------------------------

class FakeModel:
    """predict(items) -> items * 10, recording batch sizes and how many calls ran at once."""

    def __init__(self, seconds: float = 0.0, fail_on: int | None = None):
        self.seconds, self.fail_on = seconds, fail_on
        self.batches: list[list[int]] = []
        self.running = self.most_running = 0
        self.lock = threading.Lock()

    def __call__(self, items: list[int]) -> list[int]:
        with self.lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
        try:
            time.sleep(self.seconds)
            self.batches.append(list(items))
            if self.fail_on is not None and self.fail_on in items:
                raise ValueError(f"cannot predict {self.fail_on}")
            return [item * 10 for item in items]
        finally:
            with self.lock:
                self.running -= 1


def run(coroutine, timeout: float = 10.0):
    return asyncio.run(asyncio.wait_for(coroutine, timeout))


def test_batcher_combines_concurrent_requests_and_returns_each_its_own():
    model = FakeModel()

    async def scenario():
        batcher = MicroBatcher(model, max_batch=16, max_wait_ms=200)
        requests = [[i * 100 + k for k in range(1 + i % 3)] for i in range(20)]       # 39 items in 20 requests
        results = await asyncio.gather(*(batcher.submit(items) for items in requests))
        await batcher.close()
        return requests, results

    requests, results = run(scenario())
    assert results == [[item * 10 for item in items] for items in requests]
    assert [len(batch) for batch in model.batches] == [16, 16, 7]                  # full batches, then the rest
    assert sorted(sum(model.batches, [])) == sorted(sum(requests, []))


def test_batcher_splits_a_large_request_and_runs_one_call_at_a_time():
    model = FakeModel(seconds=0.01)

    async def scenario():
        batcher = MicroBatcher(model, max_batch=16, max_wait_ms=0)
        results = await asyncio.gather(batcher.submit(range(40)), batcher.submit([1000]), batcher.submit([]))
        await batcher.close()
        return results

    big, small, empty = run(scenario())
    assert big == [i * 10 for i in range(40)] and small == [10_000] and empty == []
    assert [len(batch) for batch in model.batches] == [16, 16, 9]                  # 40 + 1 items, split in order
    assert model.most_running == 1


def test_batcher_waits_at_most_max_wait_for_company():
    model = FakeModel()

    async def scenario():
        batcher = MicroBatcher(model, max_batch=100, max_wait_ms=50)
        started = time.monotonic()
        result = await batcher.submit([1])
        alone = time.monotonic() - started
        await batcher.close()
        return result, alone

    result, alone = run(scenario())
    assert result == [10] and model.batches == [[1]]
    assert 0.04 <= alone < 1.0                          # waited for company, then went alone


def test_batcher_errors_reach_only_their_batch_and_it_keeps_working():
    model = FakeModel(fail_on=13)

    async def scenario():
        batcher = MicroBatcher(model, max_batch=4, max_wait_ms=0)
        failing = asyncio.ensure_future(batcher.submit([11, 12, 13, 14, 15, 16]))   # 13 fails its first batch
        await asyncio.sleep(0)
        outcome = await asyncio.gather(failing, return_exceptions=True)
        later = await batcher.submit([1, 2])
        cancelled = asyncio.ensure_future(batcher.submit([3]))
        await asyncio.sleep(0)
        cancelled.cancel()
        after_cancel = await batcher.submit([4])
        await batcher.close()
        with pytest.raises(BatcherClosed):
            await batcher.submit([5])
        return outcome[0], later, after_cancel

    error, later, after_cancel = run(scenario())
    assert isinstance(error, ValueError) and "13" in str(error)
    assert later == [10, 20] and after_cancel == [40]
    assert [11, 12, 13, 14] in model.batches and all(15 not in batch for batch in model.batches)


def test_batcher_call_runs_unbatched_in_the_model_thread():
    model = FakeModel()

    async def scenario():
        batcher = MicroBatcher(model, max_batch=8, max_wait_ms=0, thread_name="the-model")
        thread = await batcher.call(lambda: threading.current_thread().name)
        total = await batcher.call(sum, [1, 2, 3])
        await batcher.close()
        return thread, total

    thread, total = run(scenario())
    assert thread.startswith("the-model") and total == 6 and model.batches == []


# --- the app in-process: a model that fails ------------------------------------------------------

class FailingClassifier:
    """Classifier-shaped: fails on the text "boom", else a fixed record."""

    directory = Path("/nowhere/fake-model")
    info = {"corpus": "fake", "tokenization": "word", "runtime": "fake"}

    def predict(self, texts: list[str], explain: bool = False) -> list[dict]:
        if "boom" in texts:
            raise RuntimeError("the network exploded")
        return [{"text": t, "label": 1, "sentiment": "positive", "probability": 0.75, "empty": False} for t in texts]


def test_a_failing_model_call_is_a_json_500_and_the_server_goes_on(caplog):
    from pipeline.apps.serve import create_app

    app = create_app(FailingClassifier(), max_wait_ms=0)

    async def scenario():
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            failed = await http.post("/predict", json={"texts": ["fine", "boom"]})
            after = await http.post("/predict", json={"texts": ["fine"]})
            tf = await http.post("/v1/models/fake-model:predict", json={"instances": ["a"]})
        return failed, after, tf

    failed, after, tf = run(scenario())
    assert failed.status_code == 500
    assert failed.json() == {"error": "prediction failed: RuntimeError: the network exploded"}
    assert after.json()["predictions"][0]["probability"] == 0.75
    assert tf.json() == {"predictions": [[0.75]]}
    assert "prediction failed" in caplog.text


def test_batcher_refuse_waiting_fails_the_queue_and_lets_the_running_call_answer():
    model = FakeModel(seconds=0.3)

    async def scenario():
        batcher = MicroBatcher(model, max_batch=2, max_wait_ms=0)
        running = asyncio.ensure_future(batcher.submit([1, 2]))
        await asyncio.sleep(0.1)                                    # [1, 2] is in the model now
        waiting = [asyncio.ensure_future(batcher.submit([k])) for k in (3, 4)]
        await asyncio.sleep(0.05)
        refused = batcher.refuse_waiting("shutting down")
        outcomes = await asyncio.gather(running, *waiting, return_exceptions=True)
        with pytest.raises(BatcherClosed):
            await batcher.submit([5])
        await batcher.close()
        return refused, outcomes

    refused, outcomes = run(scenario())
    assert refused == 2 and outcomes[0] == [10, 20]
    assert all(isinstance(o, BatcherClosed) and str(o) == "shutting down" for o in outcomes[1:])
    assert model.batches == [[1, 2]]


def test_explain_requests_are_bounded_by_max_explain():
    from pipeline.apps.serve import create_app

    app = create_app(FailingClassifier(), max_wait_ms=0, max_explain=2)

    async def scenario():
        async with app.router.lifespan_context(app), httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://test") as http:
            return (await http.post("/predict", json={"texts": ["a", "b", "c"], "explain": True}),
                    await http.post("/predict", json={"texts": ["a", "b"], "explain": True}),
                    await http.post("/predict", json={"texts": ["a", "b", "c"]}))

    over, at_limit, plain = run(scenario())
    assert over.status_code == 422
    assert over.json() == {"error": "explain: 3 texts, at most 2 per request with explain (--max-explain); "
                                    "split them over several requests", "field": "explain", "limit": 2}
    assert at_limit.status_code == 200 and len(at_limit.json()["predictions"]) == 2
    assert plain.status_code == 200 and len(plain.json()["predictions"]) == 3


def test_requests_still_waiting_at_the_end_of_the_shutdown_grace_get_a_json_503(word_bundle):
    server = ServerProcess(word_bundle, "--max-texts", "30000", "--max-explain", "30000", "--max-body-bytes",
                           "5000000", "--shutdown-grace", "1")
    texts = [f"{TEXTS[i % 2]} 스토리 음악 오늘 {i}" for i in range(30000)]        # several seconds of explaining
    done = {}

    def explain():
        with httpx.Client(base_url=server.url, timeout=120) as other:
            done["explain"] = other.post("/predict", json={"texts": texts, "explain": True})

    thread = threading.Thread(target=explain)
    try:
        thread.start()
        time.sleep(0.5)
        signalled = time.monotonic()
        server.proc.send_signal(signal.SIGTERM)
        thread.join(60)
        answered = time.monotonic() - signalled
        assert server.proc.wait(timeout=20) == 0
    finally:
        server.kill()
    response = done["explain"]
    assert response.status_code == 503, response.text[:300]
    assert response.json() == {"error": "the server is shutting down; send the request again"}
    assert 1.0 <= answered < 4.0, answered
    assert server.next_line(5) == "stopped"
    stderr = "".join(server.stderr)
    assert "Traceback" not in stderr and "answered 503" in stderr


# --- a client cannot hold the server ------------------------------------------------------------

def test_idle_and_stalled_connections_are_closed_and_others_are_served_meanwhile(server, client):
    from pipeline.apps.guards import BODY_TIMEOUT_S, HEADER_TIMEOUT_S

    def connect(data: bytes) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", server.port), timeout=max(HEADER_TIMEOUT_S, BODY_TIMEOUT_S) + 10)
        sock.sendall(data)
        return sock

    silent = connect(b"")                                                          # never sends a byte
    half_head = connect(b"POST /predict HTTP/1.1\r\nHost: 127.0.0.1\r\n")         # stalls in its headers
    half_body = connect(post_head("/predict", length=100) + b'{"texts": ')        # stalls in its body
    # a byte every second, forever: one deadline for the headers and one for the body, not a timer per byte
    trickle_head = connect(b"GET /health HTTP/1.1\r\nHost: x\r\n")
    trickle_body = connect(post_head("/predict", length=1000) + b'{"texts": ["')
    stop = threading.Event()

    def trickle() -> None:
        while not stop.wait(1.0):
            for sock in (trickle_head, trickle_body):
                with contextlib.suppress(OSError):
                    sock.sendall(b"x")

    threading.Thread(target=trickle, daemon=True).start()
    idle = [connect(b"") for _ in range(200)]
    started = time.monotonic()
    latencies = []
    for _ in range(40):                                                            # served all the while
        begin = time.monotonic()
        assert client.post("/predict", json={"texts": [TEXTS[0]]}).status_code == 200
        assert client.get("/health").status_code == 200
        latencies.append(time.monotonic() - begin)
    assert sorted(latencies)[-2] < 0.5, latencies
    for sock in (silent, half_head, trickle_head, *idle):
        assert sock.recv(1) == b"", "the server closed it"                         # EOF, not a timeout here
    assert time.monotonic() - started < HEADER_TIMEOUT_S + 5                      # the trickle did not extend it
    for sock in (half_body, trickle_body):
        status, headers, body = read_response(sock)
        assert status == 408 and json.loads(body)["field"] == "body" and headers.get("connection") == "close"
    stop.set()
    waited = time.monotonic() - started
    assert max(HEADER_TIMEOUT_S, BODY_TIMEOUT_S) - 1 < waited < max(HEADER_TIMEOUT_S, BODY_TIMEOUT_S) + 8
    for sock in (silent, half_head, half_body, trickle_head, trickle_body, *idle):
        sock.close()


def test_an_explain_request_does_not_stall_the_others(word_bundle):
    server = ServerProcess(word_bundle, "--max-texts", "10000", "--max-explain", "10000", "--max-body-bytes", "5000000")
    texts = [f"{TEXTS[i % 2]} 스토리 음악 오늘 {i}" for i in range(10000)]       # 8 tokens each: 8 calls per text
    done = {}

    def explain():
        with httpx.Client(base_url=server.url, timeout=120) as other:
            done["explain"] = other.post("/predict", json={"texts": texts, "explain": True})
            done["explain_at"] = time.monotonic()

    thread = threading.Thread(target=explain)
    try:
        thread.start()
        time.sleep(0.5)                                                   # the explanations are running
        with httpx.Client(base_url=server.url, timeout=120) as client:
            begin = time.monotonic()
            assert client.post("/predict", json={"texts": [TEXTS[0]]}).status_code == 200
            answered = time.monotonic()
        thread.join(120)
    finally:
        server.kill()
    assert done["explain"].status_code == 200 and len(done["explain"].json()["predictions"]) == 10000
    assert answered < done["explain_at"] and answered - begin < 0.5, (answered - begin, done["explain_at"] - begin)


def test_health_and_predict_stay_fast_under_idle_connections_and_a_maximal_explain_request(word_bundle):
    """The issue's load test, bounded and on loopback: 1,000 idle connections and one explain request of
    the most texts the server allows are open while single requests are timed."""
    server = ServerProcess(word_bundle, "--max-texts", "3000", "--max-explain", "3000")
    idle, done = [], {}
    texts = [f"{TEXTS[i % 2]} 스토리 음악 오늘 {i}" for i in range(3000)]         # 8 tokens: 8 calls per text

    def explain():
        with httpx.Client(base_url=server.url, timeout=300) as other:
            done["explain"] = other.post("/predict", json={"texts": texts, "explain": True})

    thread = threading.Thread(target=explain)
    latencies: dict[str, list[float]] = {"/health": [], "/predict": []}
    try:
        idle = [socket.create_connection(("127.0.0.1", server.port), timeout=30) for _ in range(1000)]
        thread.start()
        time.sleep(0.3)
        with httpx.Client(base_url=server.url, timeout=30) as client:
            while thread.is_alive() and len(latencies["/predict"]) < 100:      # only while it is explaining
                for path, seconds in latencies.items():
                    begin = time.monotonic()
                    response = (client.get(path) if path == "/health" else
                                client.post(path, json={"texts": [TEXTS[0]]}))
                    seconds.append(time.monotonic() - begin)
                    assert response.status_code == 200
        thread.join(300)
    finally:
        for sock in idle:
            sock.close()
        server.kill()
    assert done["explain"].status_code == 200 and len(done["explain"].json()["predictions"]) == 3000
    for path, seconds in latencies.items():
        assert len(seconds) >= 50, f"only {len(seconds)} requests while explaining"
        p99 = sorted(seconds)[int(0.99 * len(seconds)) - 1]
        print(f"{path}: {len(seconds)} requests, p50 {sorted(seconds)[len(seconds) // 2] * 1000:.1f} ms, "
              f"p99 {p99 * 1000:.1f} ms")
        assert p99 < 0.1, (path, p99)


def test_clients_holding_every_connection_with_trickled_headers_do_not_keep_health_out(word_bundle):
    import httpx

    srv = ServerProcess(word_bundle, "--max-connections", "20")
    held = []
    try:
        for _ in range(20):                                  # every slot, each sending its headers a byte at a time
            sock = socket.create_connection(("127.0.0.1", srv.port), timeout=30)
            sock.sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n")
            held.append(sock)
        time.sleep(0.5)
        answered = []
        for _ in range(10):                                  # the first takes the place of the oldest of them
            begin = time.monotonic()
            with httpx.Client(base_url=srv.url, timeout=5) as fresh:
                answered.append((fresh.get("/health").status_code, time.monotonic() - begin))
        assert [status for status, _ in answered] == [200] * 10 and max(s for _, s in answered) < 2, answered
        closed = 0
        for sock in held:
            sock.settimeout(0.2)
            try:
                closed += sock.recv(1) == b""
            except TimeoutError:
                pass
        assert closed == 1                                   # one slot was needed: only the oldest lost its own
    finally:
        for sock in held:
            sock.close()
        srv.kill()
