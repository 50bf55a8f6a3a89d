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

from pipeline import graph
from pipeline.apps.corpus_commands import corpus
from pipeline.apps.options import (
    artifacts_option,
    corpus_option,
    data_dir_option,
    data_options,
    engine_options,
    mirror_option,
    segmenter_from,
    tokenizer_options,
    train_options,
    unlabeled_option,
)
from pipeline.apps.predict_commands import predict, serve
from pipeline.apps.stage_commands import defer_shared_option, echo, stage_command
from pipeline.core import quiet
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
@defer_shared_option
def run_all(corpus, kind, backend, jamo, mirror, data_dir, force, artifacts_dir, workers, scheduler, unlabeled,
            until, defer_shared, **train_params):
    """Run every stage for one corpus and tokenizer, with default parameters (training ones settable)."""
    from pipeline.core.stage import Target

    target = Target(corpus, segmenter_from(kind, backend, jamo), data_dir=data_dir, artifacts_dir=artifacts_dir,
                    mirror=mirror, workers=workers, scheduler=scheduler, unlabeled=unlabeled,
                    train_params={k: v for k, v in train_params.items() if v is not None})
    graph.run(target, force=force, echo=echo, until=until, shared=not defer_shared)


@cli.command()
@corpus_option
@tokenizer_options
@data_dir_option
@artifacts_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per stage.")
def status(corpus, kind, backend, jamo, data_dir, artifacts_dir, as_json):
    """Which stages `ksent run` would re-run (stale, and why) or run first (missing), without running them."""
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


@cli.command(name="plan")
@click.option("--corpus", "corpora", multiple=True, required=True, help="A corpus of the build (repeatable).")
@click.option("--tokenizer", "tokenizers", multiple=True, default=("word", "char", "morpheme"), show_default=True,
              metavar="KIND[:BACKEND]", help="A tokenization of the build, e.g. morpheme:kiwi (repeatable).")
@data_dir_option
@artifacts_option
@click.option("--progress-file", type=click.Path(dir_okay=False), default=None,
              help="Also write the plan there: every stage of a build given this file in $KSENT_BUILD_PROGRESS "
                   "then prints where the whole build is (stage n of N, elapsed, an estimate of what is left).")
@click.option("--force", is_flag=True, help="Every stage, as `make all FORCE=1` re-runs them all.")
@click.option("--jobs", type=click.IntRange(min=1), default=1, show_default=True,
              help="Tokenizations (lanes) the build runs at a time, as `make all JOBS=N`: for the estimates.")
@click.option("--training-order", is_flag=True,
              help="Only print the corpora, one a line, in the order `make all` trains them: the most labelled "
                   "train rows first, as a corpus's networks start from a larger corpus's (--init-from auto); "
                   "corpora not split yet last, as given.")
def plan_build(corpora, tokenizers, data_dir, artifacts_dir, progress_file, force, jobs, training_order):
    """The stages `make all` would run for these corpora and tokenizations (those not up to date), each with the
    time it took the last time it ran."""
    from pipeline import params as defaults
    from pipeline.core import build_progress
    from pipeline.core.stage import Target
    from pipeline.corpora import get_corpus

    for name in corpora:
        get_corpus(name)
    if training_order:
        from pipeline.stages import train_rows

        for name in sorted(dict.fromkeys(corpora), key=lambda c: -train_rows(data_dir, c)):   # stable: ties as given
            click.echo(name)
        return
    segmenters = [segmenter_from(*(tok.split(":", 1) if ":" in tok else (tok, defaults.TOKENIZE["backend"])), False)
                  for tok in tokenizers]
    planned, lanes = graph.build_plan(list(corpora), segmenters,
                                      Target("", data_dir=data_dir, artifacts_dir=artifacts_dir), force=force)
    if progress_file:
        build_progress.write_plan(progress_file, planned, lanes, jobs)
    known = {what: s for what, s in planned.items() if s is not None}
    side_by_side = (f" (about {build_progress.time_left(known, lanes, jobs) / 60:.1f} min, {jobs} lanes at a time)"
                    if jobs > 1 and len(set(lanes.values())) > 1 else "")
    click.echo(f"plan: {len(planned)} stages to run" + (
        f"; {len(known)} ran before, in {sum(known.values()) / 60:.1f} min{side_by_side}" if known else ""))
    for what, seconds in planned.items():
        click.echo(f"  {what}" + (f" ({seconds:.0f} s last time)" if seconds is not None else ""))


@cli.command()
@data_dir_option
@artifacts_option
def summary(data_dir, artifacts_dir):
    """A short table of every evaluated model (test accuracy and balanced accuracy, validation accuracy, training
    time), which are stale (their data changed since: `ksent run` would make them again), and the default
    model: how `make all` ends. REPORT.md has the details."""
    from pipeline.reporting import summary_lines

    for line in summary_lines(artifacts_dir, stale=graph.stale_models(data_dir, artifacts_dir)):
        click.echo(line)


def _quiet_stdout() -> None:
    import sys

    os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # no second error at exit


# one command per registered stage (pipeline.apps.stage_commands); the commands that use the models, and the
# corpus group: modules of their own
for _stage in graph.REGISTRY:
    cli.add_command(stage_command(_stage))
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
