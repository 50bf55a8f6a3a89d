"""The CLI's options: generated from the parameter declarations (pipeline.params), and the ones
several commands share. Kept apart from the commands so that each is declared once."""
from __future__ import annotations

import math
import os

import click

from pipeline import layout, params as defaults
from pipeline.core.params import Param, Params
from pipeline.params import RUNTIME, RUNTIMES

# --- options generated from the parameter declarations (pipeline.params) -------------------

class FiniteFloatRange(click.FloatRange):
    """click's FloatRange, refusing nan (which compares false with every bound, so passes them) and inf."""

    def convert(self, value, param, ctx):
        value = super().convert(value, param, ctx)
        if not math.isfinite(value):
            self.fail(f"{value} is not a finite number.", param, ctx)
        return value


def _click_type(p: Param):
    if p.choices is not None:
        return click.Choice(list(p.choices))
    if isinstance(p.default, bool) or p.parse is not None or (p.low is None and p.high is None):
        return None
    return (click.IntRange if p.integer else FiniteFloatRange)(p.low, p.high, min_open=p.low_open,
                                                                max_open=p.high_open)


def _parse_with(p: Param):
    def callback(ctx, param, value):
        try:
            return p.parse(value) if value is not None else None
        except ValueError as exc:
            raise click.BadParameter(str(exc)) from None
    return callback


def param_option(name: str, p: Param, *, dest: str | None = None, **overrides):
    """The click option of parameter `name` declared as `p`: its flag, type, default and help."""
    flag = "--" + name.replace("_", "-")
    if p.flag:
        decls = (p.flag,)
    elif isinstance(p.default, bool):
        decls = (f"{flag}/--no-{flag[2:]}",)
    else:
        decls = (flag,)
    settings = {"default": str(p.default) if p.parse else p.default, "type": _click_type(p), "help": p.help or None}
    if p.parse:
        settings["callback"] = _parse_with(p)
    settings.update(overrides)
    return click.option(*decls, *([dest] if dest else []), **settings)


def param_options(group: Params, *, exclude: tuple[str, ...] = (), corpus_defaults: tuple[str, ...] = ()):
    """One option per parameter of `group` (pipeline.params), in declaration order. Those in
    `corpus_defaults` are None unless given: a corpus declaration may set their defaults."""
    def decorate(f):
        for name, p in reversed(list(group.params.items())):
            if name in corpus_defaults:
                f = param_option(name, p, default=None, show_default=False,
                                 help=f"{p.help}  [default: {p.default}, or the corpus declaration's]")(f)
            elif name not in exclude:
                f = param_option(name, p)(f)
        return f
    return decorate


# --- shared options ------------------------------------------------------------------------

def _known_corpus(ctx, param, value):
    # looked up at call time, not import time: `--help` works whatever the declarations hold
    from pipeline.corpora import get_corpus
    from pipeline.errors import PipelineError

    try:
        get_corpus(value)
    except PipelineError as exc:
        raise click.BadParameter(str(exc)) from None
    return value


def corpus_option(f):
    return click.option("--corpus", required=True, callback=_known_corpus,
                        help="Corpus name: a built-in one (nsmc, naver_shopping, naver_shopping_sample) or one "
                             "you declared (`ksent corpus list`).")(f)


def data_dir_option(f=None, *, help: str = "Root of raw/, interim/ and processed/."):
    """--data-dir; `help` says what a command reads there, where that is more than the default."""
    option = click.option("--data-dir", default=layout.DATA_DIR, envvar="KSENT_DATA_DIR", show_envvar=True,
                          type=click.Path(file_okay=False), help=help)
    return option(f) if f is not None else option


def data_options(f):
    f = click.option("--force", is_flag=True, help="Re-run even if the outputs are up to date.")(f)
    return data_dir_option(f)


def engine_options(f):
    """--workers and --scheduler: where the data stages' partitions run (pipeline.core.engine)."""
    f = click.option("--scheduler", metavar="ADDRESS", envvar="KSENT_SCHEDULER", show_envvar=True, default=None,
                     help="Run on this Dask scheduler (e.g. tcp://10.0.0.5:8786) instead of on this machine; "
                          "its workers must see --data-dir at the same path.")(f)
    return click.option("--workers", type=click.IntRange(1, MAX_WORKERS), default=None,
                        help="Local worker processes for the stage's partitions [default: all cores].")(f)


def tokenizer_options(f):
    f = click.option("--jamo", is_flag=True, help="char: decompose Hangul syllables into jamo.")(f)
    f = param_option("backend", defaults.TOKENIZE.params["backend"])(f)
    return param_option("tokenizer", defaults.TOKENIZE.params["tokenizer"], dest="kind")(f)


def mirror_option(f):
    return click.option("--mirror", envvar="KSENT_MIRROR", default=None, show_envvar=True,
                        help="Mirror base (folder, file:// or http(s)://) laid out as BASE/<corpus>/<file>; "
                             "default: the upstream URLs.")(f)


def runtime_option(f):
    """--runtime: how a bundle's network runs (pipeline.predict.classifier.load)."""
    return click.option(
        "--runtime", default=RUNTIME, type=click.Choice(RUNTIMES),
        help="Network runtime: model.onnx (no TensorFlow) when the bundle has one, or Keras; onnx-int8: its LSTM in "
             "8-bit integers, a faster network, probabilities close to onnx's (within 0.05 on the validation split) "
             "but not equal, and dependent on the other reviews of the same batch.")(f)


MAX_WORKERS = 1024             # processes on one machine; more is a typo that would exhaust its memory
MAX_LIST_BYTES = 10 << 20      # a word list given by path (--stopwords)


def _read_small_text(path: str, option: str) -> str:
    """A UTF-8 file given on the command line, at most MAX_LIST_BYTES; UsageError naming the file otherwise."""
    with open(path, "rb") as fh:
        data = fh.read(MAX_LIST_BYTES + 1)
    if len(data) > MAX_LIST_BYTES:
        raise click.UsageError(f"{option} {path} is larger than {MAX_LIST_BYTES >> 20} MB: is it the right file?")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise click.UsageError(f"{option} {path} is not UTF-8 text (byte {exc.start}); convert it first, e.g. "
                               f"iconv -f CP949 -t UTF-8") from None


def segmenter_from(kind: str, backend: str, jamo: bool, pos=(), stopwords=None, with_tags=False, options=()):
    if jamo and kind != "char":
        raise click.UsageError("--jamo applies to --tokenizer char only")
    from pipeline.text.segment import Segmenter

    opts = {}
    for item in options:
        key, sep, value = item.partition("=")
        if not sep:
            raise click.UsageError(f"--option expects KEY=VALUE, got {item!r}")
        opts[key] = {"true": True, "false": False}.get(value.lower(), value)
    words = ()
    if stopwords:
        words = tuple(w.strip() for w in _read_small_text(stopwords, "--stopwords").splitlines() if w.strip())
    if kind != "morpheme":
        if pos or with_tags or opts:
            raise click.UsageError("--pos, --with-tags and --option apply to --tokenizer morpheme only")
        return Segmenter(kind=kind, jamo=jamo, stopwords=words)
    return Segmenter(kind=kind, backend=backend, backend_options=tuple(sorted(opts.items())),
                     pos_filter=tuple(pos), stopwords=words, with_tags=with_tags)


def tok_name(kind: str, backend: str, jamo: bool) -> str:
    return segmenter_from(kind, backend, jamo).name()


def unlabeled_option(f):
    return click.option("--unlabeled", default="auto", show_default=True, metavar="PATH|auto|none",
                        help="Unlabeled reviews, for pretraining and for distill's teacher to label (UTF-8, one "
                             "a line, .gz accepted); auto: the corpus's registered file if `download` fetched it.")(f)


def _default_help(key: str) -> str:
    """`[default: X; char: Y]`: the defaults live in pipeline.params, some per tokenization."""
    per_kind = [f"{kind}: {values[key]}" for kind, values in defaults.TRAIN_BY_TOKENIZER.items() if key in values]
    return f"{defaults.TRAIN.params[key].help}  [default: {'; '.join([str(defaults.TRAIN[key]), *per_kind])}]"


def train_options(f):
    """One option per parameter of pipeline.params.TRAIN; not given (None) means the tokenization's default."""
    for key, p in reversed(list(defaults.TRAIN.params.items())):
        f = param_option(key, p, dest=key, default=None, show_default=False, help=_default_help(key))(f)
    return f


def artifacts_option(f):
    return click.option("--artifacts-dir", default=layout.ARTIFACTS_DIR, envvar="KSENT_ARTIFACTS_DIR",
                        show_envvar=True, type=click.Path(file_okay=False),
                        help="Where model bundles and REPORT.md go.")(f)


class ModelOption(click.Option):
    """--model, whose help lists the bundles in ./artifacts with their validation accuracy and measured speed
    (pipeline.predict.selection.model_menu), so a user can trade one for the other knowingly."""

    def get_help_record(self, ctx):
        record = super().get_help_record(ctx)
        from pipeline.predict.selection import model_menu

        folder = os.environ.get("KSENT_ARTIFACTS_DIR") or layout.ARTIFACTS_DIR
        menu = model_menu(folder)
        if record is None or not menu:
            return record
        return record[0], f"{record[1]} In {folder}, best validation accuracy first: {'; '.join(menu)}."
