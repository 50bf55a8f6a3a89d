"""The HTTP side of `ksent serve` that knows nothing of models: the request and response shapes (validation,
and the schemas in /docs), errors as JSON, and reading a request body within its size and time limits."""
from __future__ import annotations

import asyncio
import codecs
import json
from typing import Annotated, Any, Literal

from fastapi import Request
from fastapi.responses import Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError, WithJsonSchema, field_validator

from pipeline.apps.guards import BODY_TIMEOUT_S

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


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
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


def field_name(loc: tuple) -> str:
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
        problems = [{"field": field_name(e["loc"]), "message": e["msg"], "type": e["type"]}
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


