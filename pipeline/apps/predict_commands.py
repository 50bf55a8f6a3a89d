"""`ksent predict` and `ksent serve`: the trained models put to use on new text (registered in pipeline.apps.cli)."""
from __future__ import annotations

import itertools
import json

import click

from pipeline import params as defaults
from pipeline.apps.options import MAX_WORKERS, ModelOption, artifacts_option, param_options, runtime_option
from pipeline.errors import PipelineError

STREAM_BATCH = defaults.PREDICT["stream_batch"]


@click.command()
@click.argument("texts", nargs=-1)
@click.option("--model", "model_dir", type=click.Path(file_okay=False), cls=ModelOption,
              help="Bundle directory [default: the best in ./artifacts by validation accuracy, averaged over the "
                   "corpora when they have several (the router), else NSMC's best].")
@click.option("--file", "file_", type=click.Path(exists=True, dir_okay=False, allow_dash=True),
              help="Read reviews from this file, one per line ('-' = stdin).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON lines: text, label, sentiment, probability.")
@click.option("--explain", is_flag=True,
              help="Also show each token's effect on the probability and the probability while reading.")
@param_options(defaults.PREDICT, exclude=("stream_batch",))
@click.option("--workers", type=click.IntRange(1, MAX_WORKERS), default=None,
              help="Processes for morpheme analysis of large inputs [default: all cores].")
@runtime_option
@artifacts_option
@click.pass_context
def predict(ctx, texts, model_dir, file_, as_json, explain, batch_size, workers, runtime, artifacts_dir):
    """Classify Korean reviews: TEXT arguments, --file, or lines on stdin.

    Only \\n or \\r\\n ends an input line, so every input line gets exactly one
    result: 긍정 (positive) or 부정 (negative), the probability of positive, and
    the text, escaped to stay on one line (\\t, \\n, \\u2028, ..., \\\\ for a
    backslash; an empty review shows as <empty>). A review none of whose tokens
    the model knows (words it never saw, or text that cleans to nothing: emoji,
    non-Korean text) gets a fourth column, (no known token): its answer says
    nothing about the text. --json flags it `"unknown": true` (and `"empty":
    true` when nothing was left to read) and gives the exact text.
    Files and stdin are read and answered in batches, so memory stays bounded
    and results appear as they are computed.
    """
    import sys

    from pipeline.core.engine import DEFAULT_WORKERS
    from pipeline.predict.classifier import load
    from pipeline.predict.lines import argument_text, iter_line_batches, open_input

    if texts and file_:
        raise click.UsageError("give reviews as arguments or with --file, not both")
    if texts:
        batches, name = iter([[argument_text(i, text) for i, text in enumerate(texts, 1)]]), None
    else:
        stream, name = open_input(file_ or "-")
        if file_ and file_ != "-":
            ctx.with_resource(stream)                    # closed when the command ends
        elif not file_ and stream.isatty():
            raise click.UsageError("give reviews as arguments, with --file PATH, or on standard input")
        batches = iter_line_batches(stream, name, STREAM_BATCH)
    first = next(batches, None)
    if first is None:
        return
    # a file or stdin is answered with the analyzer workers on the same cores: the network's threads must not
    # spin in their way (pipeline.predict.runtime.OnnxNetwork); reviews given as arguments are answered at once
    classifier = load(model_dir or None, artifacts_dir=artifacts_dir, runtime=runtime,
                      on_note=lambda note: click.echo(f"note: {note}", err=True),
                      sleeping_threads=not texts and not explain)
    batches = itertools.chain([first], batches)
    if explain:
        results = (classifier.predict(batch, batch_size=batch_size, explain=True) for batch in batches)
    else:
        # analyzer processes only for an input of more than one full batch: a pool costs a start-up
        results = classifier.predict_stream(batches, workers=workers or DEFAULT_WORKERS,
                                            batch_size=batch_size, pool_after=STREAM_BATCH - 1)
    out = sys.stdout            # `ksent predict --file big.txt | head`: a closed pipe ends it quietly (KsentGroup)
    for records in results:
        out.write("".join(_format_record(r, as_json) for r in records))
        out.flush()


def _format_record(record: dict, as_json: bool) -> str:
    from pipeline.predict.lines import format_plain

    if as_json:
        return json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n"   # NaN is not JSON: fail loudly
    if "explanation" not in record:
        return format_plain(record) + "\n"
    from pipeline.predict.explain import format_explanation

    return "\n".join([format_plain(record), *format_explanation(record["explanation"])]) + "\n"


@click.command()
@click.option("--model", "model_dir", type=click.Path(file_okay=False), cls=ModelOption,
              help="Bundle directory [default: the best in ./artifacts by validation accuracy, averaged over the "
                   "corpora when they have several (the router), else NSMC's best].")
@click.option("--host", default=defaults.SERVE_HOST,
              help="Address to bind; 0.0.0.0 exposes the server to the network (see README).")
@click.option("--port", default=defaults.SERVE_PORT, type=click.IntRange(0, 65535),
              help="TCP port (0 = any free port).")
@click.option("--name", default=None, help="Model name in /v1/models/<name> [default: the bundle folder's name].")
@param_options(defaults.SERVE)
@runtime_option
@artifacts_option
def serve(model_dir, host, port, name, max_batch, max_wait_ms, max_texts, max_body_bytes, max_explain,
          shutdown_grace, max_connections, runtime, artifacts_dir):
    """Serve a bundle over HTTP: POST /predict, POST /v1/models/<name>:predict, GET /health, /docs.

    Concurrent requests are batched into shared model calls. SIGTERM or Ctrl-C
    stops accepting connections and lets the requests in flight finish within
    --shutdown-grace seconds; requests still waiting for the model then get 503.
    """
    try:
        from pipeline.apps.serve import run_server
    except ImportError as exc:
        raise PipelineError(f"`ksent serve` needs {exc.name}, which is not installed: `pip install 'ksent[serve]'` "
                            f"(`make setup` installs it)") from None
    run_server(model_dir, host=host, port=port, name=name, max_batch=max_batch, max_wait_ms=max_wait_ms,
               max_texts=max_texts, max_body_bytes=max_body_bytes, max_explain=max_explain,
               shutdown_grace=shutdown_grace, max_connections=max_connections, runtime=runtime,
               artifacts_dir=artifacts_dir, echo=click.echo)

