"""`ksent`: one subcommand per stage, plus `run` (every stage), `status` and `predict`.

Thin on purpose: options are parsed here and passed to the stage functions,
whose defaults live in pipeline.params. Errors a user can act on
(PipelineError) become a one-line message and exit code 1 (2 for a bad
parameter), never a traceback; so does any other error, unless KSENT_DEBUG=1.
"""
from __future__ import annotations

import errno
import json
import os
import re
import signal

import click

from pipeline import layout, params as defaults
from pipeline.apps.corpus_commands import corpus
from pipeline.apps.options import (
    artifacts_option,
    corpus_option,
    data_dir_option,
    data_options,
    engine_options,
    mirror_option,
    param_options,
    segmenter_from,
    tok_name,
    tokenizer_options,
    train_options,
    unlabeled_option,
)
from pipeline.apps.predict_commands import predict, serve
from pipeline.core import quiet
from pipeline.core.params import Params
from pipeline.errors import ParameterError, PipelineError, write_error

# TensorFlow's C++ start-up chatter (CPU instruction sets, no CUDA driver) is not for our
# users: `ksent --verbose` or KSENT_VERBOSE=1 shows it. See pipeline.core.quiet.
quiet.default_log_level()

DEBUG_ENV = "KSENT_DEBUG"
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")      # all but tab and newline
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
            raise _Failure(str(exc)) from None
        except KeyboardInterrupt:
            raise _Failure("interrupted; the previous outputs are kept, unfinished ones were "
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
            raise _Failure(str(write_error(exc, ctx.invoked_subcommand or "ksent"))) from None
        except Exception as exc:  # noqa: BLE001 - a one-line message, not a traceback, for any failure
            if os.environ.get(DEBUG_ENV):
                raise
            raise _unexpected(exc) from None


class _Failure(click.ClickException):
    """A one-line error; control characters from the data it quotes (a file's header, a declaration) are shown
    escaped, never sent to the terminal."""

    def format_message(self) -> str:
        return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", self.message)


class _BadParameter(_Failure):
    exit_code = 2          # as click's own usage errors


def _unexpected(exc: BaseException) -> click.ClickException:
    return _Failure(f"unexpected error: {type(exc).__name__}: {str(exc)[:300]} "
                                f"(set {DEBUG_ENV}=1 to see the traceback)")


@click.group(cls=KsentGroup, context_settings={"help_option_names": ["-h", "--help"], "show_default": True})
@click.version_option(package_name="ksent")
@click.option("-v", "--verbose", is_flag=True, help="Show TensorFlow's start-up log (or set KSENT_VERBOSE=1).")
def cli(verbose):
    """Korean review sentiment pipeline.

    One command per stage, each re-runnable alone (skipped when its inputs and
    parameters are unchanged; --force re-runs). `ksent run` runs them all, in
    the order their inputs give; `ksent status` lists that order and which
    stages would re-run, and why; `ksent predict` classifies new text with a
    trained bundle.
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
        from pipeline.predict.loading import load_bundle
        from pipeline.stages.domains import score

        bundle = load_bundle(layout.bundle_dir(artifacts_dir, corpus, tok))
        for other in others:
            get_corpus(other)
            path = layout.split_path(data_dir, other)
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
    """What reads every bundle (pipeline.graph.run_after_bundles: the router, the domains matrix, the report)."""
    from pipeline import graph
    from pipeline.core.stage import Target

    graph.run_after_bundles(Target("", data_dir=data_dir, artifacts_dir=artifacts_dir), force=force, echo=_echo)


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


def _quiet_stdout() -> None:
    import sys

    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # no second error at exit


# the commands that use the models, and the corpus group: modules of their own
cli.add_command(predict)
cli.add_command(serve)
cli.add_command(corpus)


def main():
    import sys

    # what ksent prints is UTF-8 whatever the locale; a path or name that is not UTF-8 shows as \\udcNN escapes
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(encoding="utf-8", errors="backslashreplace")
    cli(prog_name="ksent")


if __name__ == "__main__":
    main()
