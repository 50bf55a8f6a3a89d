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
read by this module, not by FastAPI, to return 413 without reading more than the
limit, 400 for a body that is not UTF-8 or not JSON (whatever its Content-Type, as
curl -d sends form-encoded), and 422 naming the field for anything else.
"""
from __future__ import annotations

import asyncio
import codecs
import contextlib
import errno
import json
import logging
import signal
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

import uvicorn
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, Response
from fastapi_offline import FastAPIOffline
from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, field_validator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import ClientDisconnect
from starlette.staticfiles import StaticFiles

from pipeline import layout
from pipeline.apps.batching import BatcherClosed, MicroBatcher
from pipeline.apps.guards import BODY_TIMEOUT_S, default_max_connections, guarded_protocol
from pipeline.errors import ParameterError, PipelineError
from pipeline.params import SERVE

__all__ = ["create_app", "run_server"]

log = logging.getLogger("ksent.serve")

MODEL_VERSION = "1"             # TF Serving versions a model; a ksent bundle folder is one version
DRAIN_SECONDS = 5               # after the grace period: the running model call ends and answers are sent
WARMUP_TEXT = "배우들 연기가 훌륭하고 스토리도 감동적이에요"
WEB = Path(__file__).with_name("web")     # the page: index.html, app.js, style.css


# --- request and response shapes (validation, and the schemas in /docs) -------------------------

class PredictRequest(BaseModel):
    """Body of POST /predict."""

    model_config = ConfigDict(extra="forbid", strict=True,
                              json_schema_extra={"examples": [{"texts": ["정말 재밌어요", "시간 아깝다"]}]})
    texts: list[str] = Field(description="Reviews to classify (an empty list gives no predictions).")
    explain: bool = Field(False, description="Add an `explanation` to each prediction (not batched: slower; "
                                             "at most --max-explain texts).")


class Prediction(BaseModel):
    text: str
    label: int = Field(description="1 = positive, 0 = negative.")
    sentiment: Literal["positive", "negative"]
    probability: float = Field(description="P(positive).")
    empty: bool = Field(description="The text had no known tokens: the model's answer to an empty sequence.")
    explanation: dict | None = Field(None, description="Only with explain=true.")


class PredictResponse(BaseModel):
    model: str
    predictions: list[Prediction]


_INSTANCES_SCHEMA = {"type": "array", "description": "Reviews, each a string or {\"text\": string}.", "items": {
    "anyOf": [{"type": "string"}, {"type": "object", "properties": {"text": {"type": "string"}}, "required": ["text"],
                                   "additionalProperties": False}]}}


class TFPredictRequest(BaseModel):
    """Body of POST /v1/models/<name>:predict, TF Serving's "row" format; an instance may be {"text": ...}."""

    model_config = ConfigDict(extra="forbid", strict=True,
                              json_schema_extra={"examples": [{"instances": ["정말 재밌어요", "시간 아깝다"]}]})
    instances: Annotated[list[str], WithJsonSchema(_INSTANCES_SCHEMA)]
    signature_name: Literal["serving_default"] | None = None

    @field_validator("instances", mode="before")
    @classmethod
    def _unwrap_text_objects(cls, value):
        # {"text": s} is s, so that an error names the instance ("instances.3"), not a branch of a union
        if isinstance(value, list):
            return [item["text"] if isinstance(item, dict) and item.keys() == {"text"} else item for item in value]
        return value


class TFPredictResponse(BaseModel):
    predictions: list[list[float]] = Field(description="[P(positive)] per instance, in order.")


class ErrorResponse(BaseModel):
    error: str
    field: str | None = Field(None, description="The part of the request at fault, e.g. `texts.3` or `body`.")
    errors: list[dict] | None = Field(None, description="422: every problem found, each with its field.")
    limit: int | None = Field(None, description="413 and too many texts: the limit that was exceeded.")


_ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorResponse, "description": text} for status, text in (
        (400, "The body is not UTF-8 or not JSON."), (404, "No model of that name."),
        (413, "The body is larger than --max-body-bytes."),
        (422, "A field is missing or has the wrong type, or more texts than --max-texts."),
        (500, "The model call failed (see the server's log)."),
        (503, "The server is shutting down: send the request again."))}


class RequestError(Exception):
    """An answer to a bad request: status, message, the field at fault, more JSON members."""

    def __init__(self, status: int, error: str, field: str | None = None, *, close: bool = False, **extra):
        super().__init__(error)
        self.status, self.error, self.field, self.close, self.extra = status, error, field, close, extra

    def response(self) -> Response:
        body = {"error": self.error, **({"field": self.field} if self.field is not None else {}), **self.extra}
        # after a 413 the rest of a large body is not worth reading: close the connection
        return json_response(body, self.status, headers={"Connection": "close"} if self.close else None)


def json_response(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    """UTF-8 JSON; texts with an unpaired surrogate (legal in JSON's \\u escapes) are sent escaped."""
    try:
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")
    except UnicodeEncodeError:
        body = json.dumps(payload, separators=(",", ":")).encode("ascii")
    return Response(body, status_code=status, media_type="application/json", headers=headers)


# --- reading a request ------------------------------------------------------------------------

def _too_large(max_body_bytes: int) -> RequestError:
    return RequestError(413, f"request body is larger than {max_body_bytes} bytes (--max-body-bytes); send fewer "
                             f"texts per request", "body", close=True, limit=max_body_bytes)


async def read_json_body(request: Request, max_body_bytes: int) -> Any:
    """The parsed JSON body; 413 past `max_body_bytes` (declared or counted while reading), 400 if not UTF-8 JSON."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_body_bytes:
        raise _too_large(max_body_bytes)
    body = bytearray()
    chunks = request.stream()
    deadline = asyncio.get_running_loop().time() + BODY_TIMEOUT_S     # for the whole body, not per piece
    while True:                                 # chunked bodies are counted as they arrive
        try:
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise asyncio.TimeoutError
            chunk = await asyncio.wait_for(anext(chunks), left)
        except StopAsyncIteration:
            break
        except asyncio.TimeoutError:      # = TimeoutError from Python 3.11
            raise RequestError(408, f"request body too slow: it did not arrive whole within {BODY_TIMEOUT_S:g} s",
                               "body", close=True) from None
        body += chunk
        if len(body) > max_body_bytes:
            raise _too_large(max_body_bytes)
    if body.startswith(codecs.BOM_UTF8):
        del body[:3]
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(400, f"request body is not UTF-8 text (byte 0x{body[exc.start]:02x} at offset "
                                f"{exc.start}); send JSON encoded as UTF-8", "body") from None
    if not text.strip():
        raise RequestError(400, "request body is empty; send a JSON object", "body")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise RequestError(400, f"request body is not valid JSON: {exc.msg} at line {exc.lineno} column "
                                f"{exc.colno}", "body") from None
    except RecursionError:
        raise RequestError(400, "request body is not valid JSON: nested too deeply", "body") from None
    except ValueError as exc:       # a number Python will not convert (an integer of over 4,300 digits)
        raise RequestError(400, f"request body has a number that cannot be read: {str(exc)[:100]}", "body") from None


def _field(loc: tuple) -> str:
    return ".".join(str(part) for part in loc) or "body"


def validate(model: type[BaseModel], payload: Any, list_field: str, max_texts: int) -> BaseModel:
    """`payload` as `model`, or a 422 RequestError naming the field; at most `max_texts` items in `list_field`."""
    if not isinstance(payload, dict):
        raise RequestError(422, f"request body must be a JSON object with a {list_field!r} list, "
                                f"not {type(payload).__name__ if payload is not None else 'null'}", "body")
    items = payload.get(list_field)
    if isinstance(items, list) and len(items) > max_texts:
        raise RequestError(422, f"{list_field}: {len(items)} texts, at most {max_texts} per request (--max-texts); "
                                f"split them over several requests", list_field, limit=max_texts)
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        problems = [{"field": _field(e["loc"]), "message": e["msg"], "type": e["type"]}
                    for e in exc.errors(include_url=False, include_input=False)]
        first = problems[0]
        raise RequestError(422, f"{first['field']}: {first['message']}", first["field"], errors=problems) from None


def check_unicode(texts: list[str], list_field: str) -> None:
    """A JSON \\u escape can make an unpaired surrogate, which is not text: 422, not a failure inside the model."""
    for i, text in enumerate(texts):
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise RequestError(422, f"{list_field}.{i}: contains an unpaired surrogate "
                                    f"(\\u{ord(text[exc.start]):04x}); not valid Unicode text",
                               f"{list_field}.{i}") from None


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

    @app.post("/predict", response_model=None, responses={200: {"model": PredictResponse}, **_ERROR_RESPONSES},
              openapi_extra={"requestBody": {"required": True, "content": {
                  "application/json": {"schema": PredictRequest.model_json_schema()}}}})
    async def predict(request: Request) -> Response:
        """Classify reviews: one record per text, as `ksent predict --json` prints them."""
        body = validate(PredictRequest, await read_json_body(request, max_body_bytes), "texts", max_texts)
        check_unicode(body.texts, "texts")
        return json_response({"model": name, "predictions": await predict_records(body.texts, body.explain)})

    @app.post("/v1/models/{model_name}:predict", response_model=None,
              responses={200: {"model": TFPredictResponse}, **_ERROR_RESPONSES},
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

    @app.get("/v1/models/{model_name}", response_model=None, responses={404: _ERROR_RESPONSES[404]})
    async def model_status(model_name: str) -> Response:
        """TF Serving's model status, plus what the model is: bundle metadata and test metrics."""
        check_model(model_name)
        return json_response({
            "model_version_status": [{"version": MODEL_VERSION, "state": "AVAILABLE",
                                      "status": {"error_code": "OK", "error_message": ""}}],
            "model": name, "metadata": info, "limits": limits,
            "batching": {"model_calls": batcher.calls, "texts": batcher.items} if batcher else None})

    @app.get("/v1/models/{model_name}/metadata", response_model=None, responses={404: _ERROR_RESPONSES[404]})
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
        problems = [{"field": _field(tuple(e.get("loc", ()))), "message": e.get("msg", ""), "type": e.get("type")}
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


def run_server(model_dir=None, *, host: str = "127.0.0.1", port: int = 8000, name: str | None = None,
               max_batch: int = SERVE["max_batch"], max_wait_ms: float = SERVE["max_wait_ms"],
               max_texts: int = SERVE["max_texts"], max_body_bytes: int = SERVE["max_body_bytes"],
               max_explain: int = SERVE["max_explain"], shutdown_grace: float = SERVE["shutdown_grace"],
               max_connections: int = SERVE["max_connections"],
               runtime: str = "auto", artifacts_dir: Path | str = layout.ARTIFACTS_DIR,
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
