"""`ksent serve`: the HTTP app over the Python API (FastAPI + uvicorn).

Thin, like cli.py: parse and validate a request, call `Classifier.predict`, format the
answer. Predictions are the API's records, so they equal `ksent predict --json`.

    POST /predict                       {"texts": [...], "explain": false} -> {"model", "predictions": [records]}
    POST /v1/models/<name>:predict      TensorFlow Serving's REST form: {"instances": [...]} -> {"predictions": [...]}
    GET  /v1/models/<name>              TF Serving model status, plus the bundle's metadata and metrics
    GET  /v1/models/<name>/metadata     TF Serving signature metadata
    GET  /health                        {"status": "ok", "model": name}
    GET  /, /static/...                 the web page (pipeline/apps/web: plain HTML, CSS and JavaScript over
                                        POST /predict and GET /v1/models/<name>; nothing from a CDN)
    GET  /docs, /redoc, /openapi.json   FastAPI's generated documentation (Swagger UI and ReDoc served
                                        locally by fastapi-offline: they work without internet)

Texts of concurrent requests share model calls (pipeline.apps.batching.MicroBatcher): one
call at a time, in one worker thread, off the event loop. Every error is JSON
`{"error": message, "field": where, ...}` (TF Serving's own error shape is `{"error": ...}`),
so a client can show the message and a form can mark the field. The request body is
read by pipeline.apps.http_io, not by FastAPI, to return 413 without reading more than the
limit, 400 for a body that is not UTF-8 or not JSON (whatever its Content-Type, as
curl -d sends form-encoded), and 422 naming the field for anything else.
"""
from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.staticfiles import StaticFiles

from pipeline import layout
from pipeline.apps.batching import BatcherClosed, MicroBatcher
from pipeline.apps.guards import default_max_connections, guarded_protocol
from pipeline.apps.http_io import (
    ERROR_RESPONSES,
    PredictRequest,
    PredictResponse,
    RequestError,
    TFPredictRequest,
    TFPredictResponse,
    check_unicode,
    field_name,
    json_response,
    read_json_body,
    validate,
)
from pipeline.errors import ParameterError, PipelineError
from pipeline.params import RUNTIME, SERVE, SERVE_HOST, SERVE_PORT

__all__ = ["create_app", "run_server"]

log = logging.getLogger("ksent.serve")

MODEL_VERSION = "1"             # TF Serving versions a model; a ksent bundle folder is one version
DRAIN_SECONDS = 5               # after the grace period: the running model call ends and answers are sent
WARMUP_TEXT = "배우들 연기가 훌륭하고 스토리도 감동적이에요"
WEB = Path(__file__).with_name("web")     # the page: index.html, app.js, style.css


# --- the app ------------------------------------------------------------------------------------

def create_app(clf, *, name: str | None = None, max_batch: int = SERVE["max_batch"],
               max_wait_ms: float = SERVE["max_wait_ms"], max_texts: int = SERVE["max_texts"],
               max_body_bytes: int = SERVE["max_body_bytes"], max_explain: int = SERVE["max_explain"]) -> FastAPI:
    """The FastAPI app serving Classifier `clf` as model `name` (default: the bundle folder's name).

    `app.state.stop_waiting()` answers every request still waiting for the model with 503
    (run_server calls it at the end of the shutdown grace period)."""
    import pipeline

    name = name or clf.directory.name
    info = json.loads(json.dumps(clf.info, default=str))        # computed once; reads metrics.json
    info.pop("directory", None)                                 # a path on the server is nobody else's business
    limits = {"max_batch": max_batch, "max_wait_ms": max_wait_ms, "max_texts": max_texts,
              "max_body_bytes": max_body_bytes, "max_explain": max_explain}
    batcher: MicroBatcher[str, dict] | None = None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI):
        nonlocal batcher
        batcher = MicroBatcher(clf.predict, max_batch=max_batch, max_wait_ms=max_wait_ms, thread_name="ksent-model")
        try:
            yield
        finally:
            await batcher.close()

    def stop_waiting() -> None:
        if batcher is not None:     # called only while requests are still in flight
            batcher.refuse_waiting("the server is shutting down")
            log.warning("shutdown grace period over: requests still waiting for the model are answered 503")

    # FastAPIOffline: /docs (Swagger UI) and /redoc load their scripts from ksent, not from a CDN
    app = FastAPIOffline(title="ksent", version=pipeline.__version__, lifespan=lifespan,
                         description=f"Korean review sentiment: model `{name}` ({info.get('corpus')}, "
                                     f"{info.get('tokenization')}). Texts of concurrent requests are batched "
                                     f"together.")

    async def predict_records(texts: list[str], explain: bool) -> list[dict]:
        if explain and len(texts) > max_explain:
            raise RequestError(422, f"explain: {len(texts)} texts, at most {max_explain} per request with explain "
                                    f"(--max-explain); split them over several requests", "explain",
                               limit=max_explain)
        try:
            if explain:         # a network call per token: one text per call, so batched requests run between them
                return [record for text in texts for record in await batcher.call(clf.predict, [text], explain=True)]
            return await batcher.submit(texts)
        except BatcherClosed:
            raise RequestError(503, "the server is shutting down; send the request again", close=True) from None
        except PipelineError as exc:    # what this model cannot do (explain an ensemble): the request's fault
            raise RequestError(422, str(exc), "explain" if explain else "texts") from None
        except Exception as exc:
            log.exception("prediction failed")
            raise RequestError(500, f"prediction failed: {type(exc).__name__}: {str(exc)[:300]}") from None

    def check_model(requested: str) -> None:
        if requested != name:
            raise RequestError(404, f"no model named {requested!r}: this server serves {name!r} "
                                    f"(POST /v1/models/{name}:predict)", "model", model=name)

    @app.post("/predict", response_model=None, responses={200: {"model": PredictResponse}, **ERROR_RESPONSES},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": PredictRequest.model_json_schema()}}}})
    async def predict(request: Request) -> Response:
        """Classify reviews: one record per text, as `ksent predict --json` prints them."""
        body = validate(PredictRequest, await read_json_body(request, max_body_bytes), "texts", max_texts)
        check_unicode(body.texts, "texts")
        return json_response({"model": name, "predictions": await predict_records(body.texts, body.explain)})

    @app.post("/v1/models/{model_name}:predict", response_model=None,
              responses={200: {"model": TFPredictResponse}, **ERROR_RESPONSES},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": TFPredictRequest.model_json_schema()}}}})
    async def tf_predict(model_name: str, request: Request) -> Response:
        """TensorFlow Serving's predict API: `{"instances": [...]}` -> `{"predictions": [[p], ...]}`.

        Each prediction is the model's output for that instance as TF Serving returns it:
        the network ends in one sigmoid unit, output shape (batch, 1), so an instance gets
        `[P(positive)]`, a number array, which is what a TF Serving client decodes
        (`np.array(response["predictions"])[:, 0]`). The full records (label, sentiment,
        empty) are POST /predict's. Instances are strings, or objects `{"text": string}`.
        """
        check_model(model_name)
        body = validate(TFPredictRequest, await read_json_body(request, max_body_bytes), "instances", max_texts)
        check_unicode(body.instances, "instances")
        records = await predict_records(body.instances, explain=False)
        return json_response({"predictions": [[record["probability"]] for record in records]})

    @app.get("/v1/models/{model_name}", response_model=None, responses={404: ERROR_RESPONSES[404]})
    async def model_status(model_name: str) -> Response:
        """TF Serving's model status, plus what the model is: bundle metadata and test metrics."""
        check_model(model_name)
        return json_response({
            "model_version_status": [{"version": MODEL_VERSION, "state": "AVAILABLE",
                                      "status": {"error_code": "OK", "error_message": ""}}],
            "model": name, "metadata": info, "limits": limits,
            "batching": {"model_calls": batcher.calls, "texts": batcher.items} if batcher else None})

    @app.get("/v1/models/{model_name}/metadata", response_model=None, responses={404: ERROR_RESPONSES[404]})
    async def model_metadata(model_name: str) -> Response:
        """TF Serving's signature metadata: a string `text` in, a float `probability` of shape (-1, 1) out."""
        check_model(model_name)
        signature = {"inputs": {"text": {"dtype": "DT_STRING", "tensor_shape": {"dim": [{"size": "-1"}]},
                                         "name": "text"}},
                     "outputs": {"probability": {"dtype": "DT_FLOAT", "name": "probability",
                                                 "tensor_shape": {"dim": [{"size": "-1"}, {"size": "1"}]}}},
                     "method_name": "tensorflow/serving/predict"}
        return json_response({"model_spec": {"name": name, "signature_name": "", "version": MODEL_VERSION},
                              "metadata": {"signature_def": {"signature_def": {"serving_default": signature}}}})

    @app.get("/health", response_model=None)
    async def health() -> Response:
        """Liveness: the model is loaded and the server answers."""
        return json_response({"status": "ok", "model": name})

    @app.get("/", include_in_schema=False)
    async def page() -> Response:
        """The web page: classify and explain reviews, classify a file, the model's figures."""
        return FileResponse(WEB / "index.html")

    app.mount("/static", StaticFiles(directory=WEB), name="static")

    @app.exception_handler(RequestError)
    async def request_error(request: Request, exc: RequestError) -> Response:
        return exc.response()

    @app.exception_handler(ClientDisconnect)
    async def client_gone(request: Request, exc: ClientDisconnect) -> Response:
        return Response(status_code=400)            # nobody is listening; the status is for the log

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        message = exc.detail if exc.status_code != 404 else f"no route {request.method} {request.url.path}; see /docs"
        return json_response({"error": message}, exc.status_code, headers=dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def invalid_request(request: Request, exc: RequestValidationError) -> Response:
        problems = [{"field": field_name(tuple(e.get("loc", ()))), "message": e.get("msg", ""), "type": e.get("type")}
                    for e in exc.errors()] or [{"field": "body", "message": "invalid request", "type": None}]
        return json_response({"error": f"{problems[0]['field']}: {problems[0]['message']}",
                              "field": problems[0]["field"], "errors": problems}, 422)

    app.state.model_name = name
    app.state.stop_waiting = stop_waiting
    app.state.runtime = info.get("runtime")
    return app


# --- running it ---------------------------------------------------------------------------------

def _bind(host: str, port: int) -> socket.socket:
    """A bound TCP socket, so that a busy port is a one-line error before the model is loaded."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except socket.gaierror as exc:
        raise ParameterError(f"--host {host!r} is not an address of this machine ({exc.strerror})") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        hint = {errno.EADDRINUSE: "another program uses it: stop it, or choose another --port (0 = any free port)",
                errno.EACCES: "ports below 1024 need privileges: choose a --port above 1023",
                errno.EADDRNOTAVAIL: "the address is not one of this machine's: check --host"}
        raise PipelineError(f"cannot listen on {host}:{port}: {exc.strerror} - "
                            f"{hint.get(exc.errno, 'check --host and --port')}") from None
    return sock


def _url(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://{f'[{host}]' if ':' in host else host}:{port}"


@contextlib.contextmanager
def _signals_left_to_uvicorn(stop_requested: list[int]):
    """Let uvicorn's SIGINT/SIGTERM handling decide, and have neither end as an error.

    `ksent`'s group turns SIGTERM into KeyboardInterrupt (an interrupted stage unwinds),
    and uvicorn, once shut down gracefully, re-raises the signal it caught to the
    handler it found. Found handlers that only take note make that a clean exit (0);
    a signal that arrives before uvicorn installs its own is noted and stops the server
    as soon as it has started.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    handled = (signal.SIGINT, signal.SIGTERM)
    previous = {sig: signal.signal(sig, lambda sig, frame: stop_requested.append(sig)) for sig in handled}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def run_server(model_dir=None, *, host: str = SERVE_HOST, port: int = SERVE_PORT, name: str | None = None,
               max_batch: int = SERVE["max_batch"], max_wait_ms: float = SERVE["max_wait_ms"],
               max_texts: int = SERVE["max_texts"], max_body_bytes: int = SERVE["max_body_bytes"],
               max_explain: int = SERVE["max_explain"], shutdown_grace: float = SERVE["shutdown_grace"],
               max_connections: int = SERVE["max_connections"],
               runtime: str = RUNTIME, artifacts_dir: Path | str = layout.ARTIFACTS_DIR,
               echo: Callable[[str], None] = lambda line: print(line, flush=True)) -> None:
    """Serve the bundle in `model_dir` (None: the default model in `artifacts_dir`) until SIGTERM or Ctrl-C.

    Echoes one line with the real address once the socket listens (so --port 0 can be
    read from stdout), and `stopped` after requests in flight have finished. After SIGTERM,
    requests get `shutdown_grace` seconds; those still waiting for the model then get 503.
    `runtime`: as pipeline.predict.classifier.load's.
    Raises PipelineError for a bundle that cannot be loaded or an address that cannot be bound.
    """
    from pipeline.predict.classifier import load

    if name is not None and (not name or any(c in name for c in "/:?#% ")):
        raise ParameterError(f"--name {name!r} cannot be part of a URL path: use letters, digits, '-', '_', '.'")
    sock = _bind(host, port)
    try:
        clf = load(model_dir or None, artifacts_dir=artifacts_dir, runtime=runtime,
                   on_note=lambda note: echo(f"note: {note}"))
        app = create_app(clf, name=name, max_batch=max_batch, max_wait_ms=max_wait_ms, max_texts=max_texts,
                         max_body_bytes=max_body_bytes, max_explain=max_explain)
        clf.predict([WARMUP_TEXT])                  # the first call pays one-off costs, not the first client
        runtime = f" ({app.state.runtime})" if app.state.runtime else ""
        banner = (f"serving {app.state.model_name}{runtime} at {_url(sock)} - the page at /, API docs at /docs; "
                  f"Ctrl-C or SIGTERM stops")
        stop_requested: list[int] = []

        class Server(uvicorn.Server):
            async def startup(self, sockets=None) -> None:
                await super().startup(sockets=sockets)
                if self.started:
                    echo(banner)
                if stop_requested:
                    self.should_exit = True

            async def shutdown(self, sockets=None) -> None:
                # uvicorn cancels what is still running when its timeout ends, and a cancelled request is a
                # 500: so at the end of the grace period the waiting requests are answered 503 first
                timer = asyncio.get_running_loop().call_later(shutdown_grace, app.state.stop_waiting)
                try:
                    await super().shutdown(sockets=sockets)
                finally:
                    timer.cancel()

        # access log off: a log line per request costs more than the request; uvicorn's own lines: warnings up
        config = uvicorn.Config(app, loop="auto", http=guarded_protocol(max_connections or default_max_connections()),
                                lifespan="on",
                                log_level="warning", access_log=False,
                                timeout_graceful_shutdown=shutdown_grace + DRAIN_SECONDS, server_header=False)
        with _signals_left_to_uvicorn(stop_requested):
            Server(config).run(sockets=[sock])
    finally:
        sock.close()
    echo("stopped")
