"""`ksent`: one subcommand per stage, plus `run` (every stage), `status` and `predict`.

Thin on purpose: options are parsed here and passed to the stage functions,
whose defaults live in pipeline.params. Errors a user can act on
(PipelineError) become a one-line message and exit code 1 (2 for a bad
parameter), never a traceback; so does any other error, unless KSENT_DEBUG=1.
"""
from __future__ import annotations

import errno
import itertools
import json
import os
import signal
from pathlib import Path

import click

from pipeline import layout, params as defaults
from pipeline.apps.options import (
    MAX_WORKERS,
    ModelOption,
    artifacts_option,
    corpus_option,
    data_dir_option,
    data_options,
    engine_options,
    mirror_option,
    param_options,
    runtime_option,
    segmenter_from,
    tok_name,
    tokenizer_options,
    train_options,
    unlabeled_option,
)
from pipeline.core import quiet
from pipeline.core.params import Params
from pipeline.errors import ParameterError, PipelineError, write_error

# TensorFlow's C++ start-up chatter (CPU instruction sets, no CUDA driver) is not for our
# users: `ksent --verbose` or KSENT_VERBOSE=1 shows it. See pipeline.core.quiet.
quiet.default_log_level()

DEBUG_ENV = "KSENT_DEBUG"
WRITE_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM}


def _terminate(signum, frame):
    # Unwind like Ctrl-C, so that staging folders are removed and worker processes stopped.
    raise KeyboardInterrupt


class KsentGroup(click.Group):
    def invoke(self, ctx):
        if signal.getsignal(signal.SIGTERM) is signal.SIG_DFL:
            signal.signal(signal.SIGTERM, _terminate)
        try:
            return super().invoke(ctx)
        except ParameterError as exc:
            raise _BadParameter(str(exc)) from None
        except PipelineError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            raise click.ClickException("interrupted; the previous outputs are kept, unfinished ones were "
                                       "discarded") from None
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise
        except BrokenPipeError:     # `ksent predict ... | head`: the reader has all it wanted
            _quiet_stdout()
            return None
        except OSError as exc:
            if os.environ.get(DEBUG_ENV):
                raise
            if exc.errno not in WRITE_ERRNOS:
                raise _unexpected(exc) from None
            raise click.ClickException(str(write_error(exc, ctx.invoked_subcommand or "ksent"))) from None
        except Exception as exc:  # noqa: BLE001 - a one-line message, not a traceback, for any failure
            if os.environ.get(DEBUG_ENV):
                raise
            raise _unexpected(exc) from None


class _BadParameter(click.ClickException):
    exit_code = 2          # as click's own usage errors


def _unexpected(exc: BaseException) -> click.ClickException:
    return click.ClickException(f"unexpected error: {type(exc).__name__}: {str(exc)[:300]} "
                                f"(set {DEBUG_ENV}=1 to see the traceback)")


@click.group(cls=KsentGroup, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="ksent")
@click.option("-v", "--verbose", is_flag=True, help="Show TensorFlow's start-up log (or set KSENT_VERBOSE=1).")
def cli(verbose):
    """Korean review sentiment pipeline.

    Stages, each re-runnable alone (skipped when its inputs and parameters are
    unchanged; --force re-runs): download -> clean -> dedupe -> split ->
    tokenize -> pad -> train -> evaluate. `ksent run` runs them all;
    `ksent predict` classifies new text with a trained bundle; `ksent status`
    says which stages would re-run, and why.
    """
    if verbose:
        quiet.set_verbose()


def _echo(line: str) -> None:
    click.echo(line)


def _run(stage: str, *args, **kwargs):
    """The function of stage module pipeline.stages.<stage> (imported now, not at start-up), with the CLI's echo."""
    from pipeline import graph

    return getattr(graph.stage_module(stage), stage)(*args, echo=_echo, **kwargs)


# --- stages --------------------------------------------------------------------------------

@cli.command()
@corpus_option
@mirror_option
@data_options
@param_options(defaults.DOWNLOAD, exclude=("backoff",))
def download(corpus, mirror, data_dir, force, **params):
    """Fetch the corpus files into DATA_DIR/raw/<corpus>/ and verify their checksums."""
    _run("download", corpus, data_dir=data_dir, mirror=mirror, force=force, **params)


def _corpus_stage(name: str, group: Params, help_text: str, engine: bool = True,
                  corpus_defaults: tuple[str, ...] = ()) -> None:
    """`ksent <name>` for a corpus-wide stage whose options are its parameters (and the engine's)."""
    def command(corpus, data_dir, force, **params):
        _run(name, corpus, data_dir=data_dir, force=force, **params)
        _one_off_note(name, group, corpus, {k: params[k] for k in corpus_defaults})

    command.__doc__ = help_text
    decorated = param_options(group, corpus_defaults=corpus_defaults)(engine_options(command) if engine else command)
    cli.command(name=name)(corpus_option(data_options(decorated)))


def _one_off_note(stage: str, group: Params, corpus: str, given: dict) -> None:
    """Say so when an option differs from what `ksent run` uses (the declaration's value, else the default):
    the next `ksent run` makes the stage again with that."""
    from pipeline.corpora import get_corpus

    spec = get_corpus(corpus)
    declared = {**group, **dict(spec.split.defaults if stage == "split" else spec.clean)}
    changed = {key: value for key, value in given.items() if value is not None and value != declared[key]}
    if changed:
        used = ", ".join(f"{key} = {json.dumps(declared[key])}" for key in changed)
        keep = ", ".join(f"{key} = {json.dumps(value)}" for key, value in changed.items())
        click.echo(f"note: `ksent run` and `make all` use {used} and will make this again with it; to keep "
                   f"{keep}, set it under [{stage}] in {spec.origin}", err=True)


_corpus_stage("clean", defaults.CLEAN, "Normalize the raw text (regex profile); count malformed and empty rows.",
              corpus_defaults=("profile", "squeeze", "drop_empty_test"))
_corpus_stage("dedupe", defaults.DEDUPE,
              "Remove duplicate texts; report and handle label conflicts and train/test leakage.")
_corpus_stage("split", defaults.SPLIT, "Assign train/validation/test membership (stratified, seeded).", engine=False,
              corpus_defaults=("seed", "val_ratio", "test_ratio"))


@cli.command()
@corpus_option
@tokenizer_options
@data_options
@click.option("--pos", multiple=True, help="morpheme: keep only tags starting with this prefix (repeatable).")
@click.option("--stopwords", type=click.Path(exists=True, dir_okay=False),
              help="File with one stopword a line (UTF-8, at most 10 MB).")
@click.option("--with-tags", is_flag=True, help="morpheme: emit morpheme/TAG tokens.")
@click.option("--option", "options", multiple=True, metavar="KEY=VALUE",
              help="Backend option, e.g. --option stem=true for okt (repeatable).")
@engine_options
def tokenize(corpus, kind, backend, jamo, data_dir, force, pos, stopwords, with_tags, options, workers, scheduler):
    """Segment every cleaned review into tokens (word, char or morpheme)."""
    _run("tokenize", corpus, segmenter_from(kind, backend, jamo, pos, stopwords, with_tags, options),
         data_dir=data_dir, workers=workers, scheduler=scheduler, force=force)


@cli.command()
@corpus_option
@tokenizer_options
@data_options
@unlabeled_option
@param_options(defaults.PRETRAIN)
@engine_options
def pretrain(corpus, kind, backend, jamo, data_dir, force, unlabeled, workers, scheduler, **params):
    """Learn token vectors from the train split plus unlabeled reviews (vectors.npz for pad and train)."""
    _run("pretrain", corpus, tok_name(kind, backend, jamo), data_dir=data_dir, unlabeled=unlabeled, workers=workers,
         scheduler=scheduler, force=force, **params)


@cli.command()
@corpus_option
@tokenizer_options
@data_options
@param_options(defaults.PAD)
@engine_options
def pad(corpus, kind, backend, jamo, data_dir, force, workers, scheduler, **params):
    """Fit the vocabulary and maxlen on the train split; write padded arrays and tokenizer.json."""
    _run("pad", corpus, tok_name(kind, backend, jamo), data_dir=data_dir, workers=workers, scheduler=scheduler,
         force=force, **params)


@cli.command()
@corpus_option
@tokenizer_options
@data_options
@artifacts_option
@train_options
def train(corpus, kind, backend, jamo, data_dir, force, artifacts_dir, **params):
    """Train the Embedding + LSTM classifier; save the bundle in ARTIFACTS_DIR/<corpus>-<tok>/."""
    _run("train", corpus, tok_name(kind, backend, jamo), data_dir=data_dir, artifacts_dir=artifacts_dir, force=force,
         **params)


@cli.command()
@corpus_option
@tokenizer_options
@data_options
@artifacts_option
@click.option("--on", "others", multiple=True, metavar="CORPUS",
              help="Also score the bundle on this declared corpus's validation and test splits (repeatable; the "
                   "corpus's data stages must have run). `ksent domains` scores every bundle on every corpus.")
def evaluate(corpus, kind, backend, jamo, data_dir, force, artifacts_dir, others):
    """Score the bundle on the test split: metrics.json, confusion matrix, REPORT.md."""
    tok = tok_name(kind, backend, jamo)
    _run("evaluate", corpus, tok, data_dir=data_dir, artifacts_dir=artifacts_dir, force=force)
    _run("report", artifacts_dir=artifacts_dir, stale=_stale(data_dir, artifacts_dir))
    if others:
        from pipeline.corpora import get_corpus
        from pipeline.predict.bundle import load_bundle
        from pipeline.stages.domains import score

        bundle = load_bundle(layout.bundle_dir(artifacts_dir, corpus, tok))
        for other in others:
            get_corpus(other)
            path = layout.interim_dir(data_dir, other) / "split.parquet"
            if not path.is_file():
                raise PipelineError(f"{path} is not there: run `ksent run --corpus {other}` (or its data stages) first")
            cell = score(bundle, path, other)
            click.echo(f"evaluate {corpus}/{tok} on {other}: " + ", ".join(
                f"{split} accuracy {cell[split]['accuracy']:.4f} on {cell[split]['n']:,} rows" for split in cell))


@cli.command(name="run")
@corpus_option
@tokenizer_options
@mirror_option
@data_options
@artifacts_option
@engine_options
@unlabeled_option
@train_options
@click.option("--until", metavar="STAGE", default=None,
              help="Run only this stage and the stages it reads from (e.g. `--until pretrain`).")
def run_all(corpus, kind, backend, jamo, mirror, data_dir, force, artifacts_dir, workers, scheduler, unlabeled,
            until, **train_params):
    """Run every stage for one corpus and tokenizer, with default parameters (training ones settable)."""
    from pipeline import graph
    from pipeline.core.stage import Target

    target = Target(corpus, segmenter_from(kind, backend, jamo), data_dir=data_dir, artifacts_dir=artifacts_dir,
                    mirror=mirror, workers=workers, scheduler=scheduler, unlabeled=unlabeled,
                    train_params={k: v for k, v in train_params.items() if v is not None})
    graph.run(target, force=force, echo=_echo, until=until)


@cli.command()
@corpus_option
@tokenizer_options
@data_dir_option
@artifacts_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per stage.")
def status(corpus, kind, backend, jamo, data_dir, artifacts_dir, as_json):
    """Which stages `ksent run` would re-run (stale, and why) or run first (missing), without running them."""
    from pipeline import graph
    from pipeline.core.stage import Target

    segmenter = segmenter_from(kind, backend, jamo)
    rows = graph.status(Target(corpus, segmenter, data_dir=data_dir, artifacts_dir=artifacts_dir))
    if as_json:
        for row in rows:
            click.echo(json.dumps({"corpus": corpus, "tokenizer": row.tok or segmenter.name(), "stage": row.stage,
                                   "state": row.state, "reasons": row.reasons, "command": row.command},
                                  ensure_ascii=False))
        return
    click.echo(f"status {corpus}/{segmenter.name()}:")
    width = max(len(row.name) for row in rows)
    for row in rows:
        click.echo(row.line(width))


@cli.command()
@corpus_option
@data_dir_option
@artifacts_option
@click.option("--member", "members", multiple=True,
              help="Bundle folder name to combine (repeatable) [default: every trained bundle of the corpus].")
@param_options(defaults.ENSEMBLE)
@click.option("--force", is_flag=True, help="Re-run even if the outputs are up to date.")
def ensemble(corpus, data_dir, artifacts_dir, members, combination, threshold, force):
    """Average the corpus's trained bundles into ARTIFACTS_DIR/<corpus>-ensemble/ and score it on the test split."""
    _run("ensemble", corpus, members=list(members) or None, combination=combination, threshold=threshold,
         data_dir=data_dir, artifacts_dir=artifacts_dir, force=force)
    _after_bundles(data_dir, artifacts_dir)


@cli.command()
@corpus_option
@data_dir_option
@artifacts_option
@unlabeled_option
@param_options(defaults.DISTILL)
@click.option("--force", is_flag=True, help="Re-run even if the outputs are up to date.")
def distill(corpus, data_dir, artifacts_dir, unlabeled, force, **params):
    """Teach one network the corpus's ensemble: the ensemble labels unlabeled reviews, and a student bundle,
    ARTIFACTS_DIR/<corpus>-<tok>-student/, trains on them and the train split, then is scored on the test split.
    A corpus that declares no unlabeled file is skipped unless --unlabeled names one."""
    from pipeline.corpora import get_corpus

    if unlabeled == "auto" and get_corpus(corpus).unlabeled is None:
        click.echo(f"distill {corpus}: skipped - the corpus declares no unlabeled reviews (give --unlabeled PATH)")
        return
    _run("distill", corpus, unlabeled=unlabeled, data_dir=data_dir, artifacts_dir=artifacts_dir, force=force,
         **params)
    _after_bundles(data_dir, artifacts_dir)


def _after_bundles(data_dir, artifacts_dir, force: bool = False) -> None:
    """What reads every bundle: the router (once two corpora have bundles), the domains matrix, the report."""
    from pipeline.errors import ParameterError
    from pipeline.stages.router import plan as router_plan

    try:
        router_plan(data_dir=data_dir, artifacts_dir=artifacts_dir)
    except ParameterError:
        pass                                    # fewer than two corpora: no router
    else:
        _run("router", data_dir=data_dir, artifacts_dir=artifacts_dir, force=force)
    _run("domains", data_dir=data_dir, artifacts_dir=artifacts_dir, force=force)
    _run("report", artifacts_dir=artifacts_dir, stale=_stale(data_dir, artifacts_dir))


def _stale(data_dir, artifacts_dir) -> dict[str, str]:
    from pipeline import graph

    return graph.stale_models(data_dir, artifacts_dir)


@cli.command()
@data_dir_option
@artifacts_option
@click.option("--force", is_flag=True, help="Score every cell again, even the unchanged ones.")
def domains(data_dir, artifacts_dir, force):
    """Score every bundle on every corpus's validation and test splits (REPORT.md's cross-domain matrix, the
    default model's choice), after the router if two corpora have bundles; then the report."""
    _after_bundles(data_dir, artifacts_dir, force)


@cli.command()
@data_dir_option
@artifacts_option
@click.option("--force", is_flag=True, help="Re-run even if the outputs are up to date.")
def router(data_dir, artifacts_dir, force):
    """One model for every corpus: each corpus's best bundle (by validation accuracy) as its expert, and a gate
    that says which corpus a review is like, in ARTIFACTS_DIR/router/."""
    _run("router", data_dir=data_dir, artifacts_dir=artifacts_dir, force=force)


@cli.command()
@data_dir_option
@artifacts_option
def summary(data_dir, artifacts_dir):
    """A short table of every evaluated model (test accuracy and balanced accuracy, validation accuracy, training
    time), which are stale (their data changed since: `ksent run` would make them again), and the default
    model: how `make all` ends. REPORT.md has the details."""
    from pipeline.reporting import summary_lines

    for line in summary_lines(artifacts_dir, stale=_stale(data_dir, artifacts_dir)):
        click.echo(line)


@cli.command()
@data_dir_option
@artifacts_option
def report(data_dir, artifacts_dir):
    """Rewrite ARTIFACTS_DIR/REPORT.md from every bundle's metrics.json."""
    _run("report", artifacts_dir=artifacts_dir, stale=_stale(data_dir, artifacts_dir), force=True)


# --- predict -------------------------------------------------------------------------------

STREAM_BATCH = defaults.PREDICT["stream_batch"]


@cli.command()
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


def _quiet_stdout() -> None:
    import sys

    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # no second error at exit


def _format_record(record: dict, as_json: bool) -> str:
    from pipeline.predict.lines import format_plain

    if as_json:
        return json.dumps(record, ensure_ascii=False, allow_nan=False) + "\n"   # NaN is not JSON: fail loudly
    if "explanation" not in record:
        return format_plain(record) + "\n"
    from pipeline.predict.explain import format_explanation

    return "\n".join([format_plain(record), *format_explanation(record["explanation"])]) + "\n"


# --- corpora ------------------------------------------------------------------------------

@cli.group()
def corpus():
    """Declared corpora: list them, show what a declaration resolves to, check a file against it.

    A corpus is a TOML declaration NAME.toml, found in ksent's built-ins, in ./corpora/ and in the
    files or folders of $KSENT_CORPORA (docs/corpora.md documents every key).
    """


@corpus.command(name="list")
def corpus_list():
    """Every declared corpus, and where it is declared."""
    from pipeline.corpora import CORPORA
    from pipeline.predict.lines import escape

    for name, spec in CORPORA.items():                   # a description is shown, never run (escape codes)
        click.echo(f"{name:<24} {escape(spec.description) or '(no description)'}\n{'':<24} {escape(spec.origin)}")


@corpus.command(name="show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def corpus_show(name, as_json):
    """What declaration NAME resolves to: files, sources, format, columns, label rule, split."""
    from pipeline.corpora import get_corpus
    from pipeline.corpora.check import describe
    from pipeline.predict.lines import escape

    described = describe(get_corpus(name))
    if as_json:
        click.echo(json.dumps(described, ensure_ascii=False, indent=2))
        return
    for key, value in described.items():               # shown, never run: a declaration may hold escape codes
        if isinstance(value, list):
            click.echo(f"{key}:")
            for item in value:
                click.echo("  - " + escape("; ".join(f"{k} {v}" for k, v in item.items())))
        elif isinstance(value, dict):
            click.echo(f"{key}: " + escape("; ".join(f"{k} {v}" for k, v in value.items())))
        else:
            click.echo(f"{key}: {escape(str(value))}")


@corpus.command(name="check")
@click.argument("name")
@click.argument("files", nargs=-1, type=click.Path(exists=True, dir_okay=False))
@data_dir_option(help="Where `download` put the corpus's files (checked when no FILES are given).")
def corpus_check(name, files, data_dir):
    """Read FILES (default: the corpus's downloaded files, else its declared local files) as declaration NAME
    says, without running the pipeline: rows, usable rows by label, problems by reason, what cleaning would
    drop, and whether the split can be made. Exits non-zero when `ksent run` would fail on them."""
    from pipeline.corpora import get_corpus
    from pipeline.corpora.check import check_file, split_check

    spec = get_corpus(name)
    if files:
        role = spec.files[0].source if len(spec.files) == 1 else "all"
        targets = [(Path(f), role) for f in files]
    else:                       # the downloaded copies, else the declared local files themselves
        raw = layout.raw_dir(data_dir, name)
        targets = [(raw / f.name if (raw / f.name).is_file() or f.local_path is None else f.local_path, f.source)
                   for f in spec.files]
        missing = [str(p) for p, _ in targets if not p.is_file()]
        if missing:
            raise PipelineError(f"{missing[0]} is not there: give the files to check, or run "
                                f"`ksent download --corpus {name}` first")
    reports = []
    for path, role in targets:
        report = check_file(spec, path, role)
        reports.append(report)
        problems = ", ".join(f"{n:,} {reason}" for reason, n in report["problems"].items()) or "none"
        sources = ", ".join(f"{s} {n:,}" for s, n in report["by source"].items())
        click.echo(f"{path}: {report['rows']:,} rows -> {report['usable']:,} usable ({report['positive']:,} "
                   f"positive, {report['negative']:,} negative; {sources}); not usable: {problems}")
        if report["unmapped label values"]:
            click.echo("  label values no rule maps: " + ", ".join(
                f"{value!r} ({n:,})" for value, n in report["unmapped label values"].items()))
        for line in _cleaning_lines(report["cleaning"]) if report["usable"] else []:
            click.echo(f"  {line}")
    problem = split_check(spec, reports)
    if problem:
        raise PipelineError(f"{spec.origin}: {problem}")
    click.echo(f"{name}: `ksent run --corpus {name}` can read these files "
               f"({sum(r['usable'] for r in reports):,} usable rows)")


def _cleaning_lines(cleaning: dict) -> list[str]:
    """What `corpus check` says of cleaning: the usable rows that would be empty, and what other profiles keep."""
    if not cleaning["empty"]:
        return [f"cleaning (profile {cleaning['profile']}): no usable row becomes empty"]
    share = cleaning["empty_positive"] / cleaning["empty"]
    lines = [f"cleaning (profile {cleaning['profile']}): {cleaning['empty']:,} usable rows would be empty and "
             f"dropped ({share:.0%} positive)"
             + (f", e.g. {', '.join(repr(t[:40]) for t in cleaning['examples'])}" if cleaning["examples"] else "")]
    for profile, kept in cleaning["kept by"].items():
        if kept:
            lines.append(f"  profile {profile} would keep {kept:,} of them: [clean] profile = \"{profile}\" in "
                         f"the declaration")
    return lines


@cli.command()
@click.option("--model", "model_dir", type=click.Path(file_okay=False), cls=ModelOption,
              help="Bundle directory [default: the best in ./artifacts by validation accuracy, averaged over the "
                   "corpora when they have several (the router), else NSMC's best].")
@click.option("--host", default="127.0.0.1",
              help="Address to bind; 0.0.0.0 exposes the server to the network (see README).")
@click.option("--port", default=8000, type=click.IntRange(0, 65535), help="TCP port (0 = any free port).")
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
               artifacts_dir=artifacts_dir, echo=_echo)


def main():
    import sys

    # what ksent prints is UTF-8 whatever the locale; a path or name that is not UTF-8 shows as \\udcNN escapes
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(encoding="utf-8", errors="backslashreplace")
    cli(prog_name="ksent")


if __name__ == "__main__":
    main()
