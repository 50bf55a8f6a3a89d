"""`ksent <stage>`: one command per stage of pipeline.graph.REGISTRY, generated. Each takes the options of its
scope (the corpus, the tokenization, the folders, --force), the options of its parameters (pipeline.params, the
group named after the stage), the engine's options when it runs on partitions, and the few options of its own
that COMMANDS lists; what runs after it (the report, or the stages that read every bundle) comes from the graph.
"""
from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

import click

from pipeline import graph, layout, params as defaults
from pipeline.apps.options import (
    artifacts_option,
    corpus_option,
    data_dir_option,
    engine_options,
    mirror_option,
    param_options,
    segmenter_from,
    tok_name,
    tokenizer_options,
    train_options,
    unlabeled_option,
)
from pipeline.core.params import Params
from pipeline.errors import PipelineError

FORCE_HELP = "Re-run even if the outputs are up to date."
defer_shared_option = click.option(
    "--defer-shared", is_flag=True,
    help="Leave the stages that read every corpus's bundles (router, student, domains, report) to a later "
         "`ksent domains`: `make all` runs them once, after its last bundle.")


@dataclass(frozen=True)
class Command:
    """What a stage's command has beyond its scope's options and its parameters."""
    help: str
    options: tuple[Callable, ...] = ()           # click decorators, in help order, after the folders
    leading: tuple[Callable, ...] = ()           # ... and before them (where the data comes from)
    exclude: tuple[str, ...] = ()                # parameters that get no option
    corpus_defaults: tuple[str, ...] = ()        # parameters a corpus declaration may set (None unless given)
    engine: bool = False                         # --workers, --scheduler
    artifacts: bool = False                      # --artifacts-dir, for a stage of a corpus or tokenization
    force_help: str | None = FORCE_HELP          # None: no --force
    params: Callable | None = None               # the parameters' options, when not param_options(<group>)
    call: Callable | None = None                 # fn(name, scope, kwargs): runs instead of the stage function


def echo(line: str) -> None:
    click.echo(line)


def run_stage_function(stage: str, *args, **kwargs):
    """The function of stage module pipeline.stages.<stage> (imported now, not at start-up), with the CLI's echo."""
    return getattr(graph.stage_module(stage), stage)(*args, echo=echo, **kwargs)


def after_bundles(data_dir, artifacts_dir, force: bool = False) -> None:
    """What reads every bundle (pipeline.graph.run_after_bundles: the router and its student, the domains matrix,
    the report)."""
    from pipeline.core.stage import Target

    graph.run_after_bundles(Target("", data_dir=data_dir, artifacts_dir=artifacts_dir), force=force, echo=echo)


def group_of(stage: str) -> Params | None:
    """The stage's parameters: pipeline.params.<STAGE>, if it declares any."""
    group = getattr(defaults, stage.upper(), None)
    return group if isinstance(group, Params) else None


def _positional(scope: str, kwargs: dict) -> list:
    """The stage function's positional arguments, taken out of the command's options."""
    if scope == graph.TOKENIZATION:
        tok = tok_name(kwargs.pop("kind"), kwargs.pop("backend"), kwargs.pop("jamo"))
        return [kwargs.pop("corpus"), tok]
    if scope in (graph.CORPUS, graph.BUNDLES):
        return [kwargs.pop("corpus")]
    return []


def _run_stage(name: str, scope: str, kwargs: dict) -> None:
    run_stage_function(name, *_positional(scope, kwargs), **kwargs)


# --- what some stages do besides running ------------------------------------------------------------

def _one_off_note(stage: str, corpus: str, given: dict) -> None:
    """Say so when an option differs from what `ksent run` uses (the declaration's value, else the default):
    the next `ksent run` makes the stage again with that."""
    from pipeline.corpora import get_corpus

    spec = get_corpus(corpus)
    declared = {**group_of(stage), **dict(spec.split.defaults if stage == "split" else spec.clean)}
    changed = {key: value for key, value in given.items() if value is not None and value != declared[key]}
    if changed:
        used = ", ".join(f"{key} = {json.dumps(declared[key])}" for key in changed)
        keep = ", ".join(f"{key} = {json.dumps(value)}" for key, value in changed.items())
        click.echo(f"note: `ksent run` and `make all` use {used} and will make this again with it; to keep "
                   f"{keep}, set it under [{stage}] in {spec.origin}", err=True)


def _with_note(name: str, scope: str, kwargs: dict) -> None:
    corpus, given = kwargs["corpus"], {k: kwargs[k] for k in COMMANDS[name].corpus_defaults}
    _run_stage(name, scope, kwargs)
    _one_off_note(name, corpus, given)


def _tokenize(name: str, scope: str, kwargs: dict) -> None:
    segmenter = segmenter_from(*(kwargs.pop(k) for k in ("kind", "backend", "jamo", "pos", "stopwords",
                                                         "with_tags", "options")))
    run_stage_function(name, kwargs.pop("corpus"), segmenter, **kwargs)


def _evaluate(name: str, scope: str, kwargs: dict) -> None:
    others, corpus = kwargs.pop("others"), kwargs["corpus"]
    tok = tok_name(kwargs["kind"], kwargs["backend"], kwargs["jamo"])
    data_dir, artifacts_dir = kwargs["data_dir"], kwargs["artifacts_dir"]
    _run_stage(name, scope, kwargs)
    run_stage_function("report", artifacts_dir=artifacts_dir, stale=graph.stale_models(data_dir, artifacts_dir))
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


def _pad(name: str, scope: str, kwargs: dict) -> None:
    """pad, its vocabulary starting with that of the bundle --init-from names (as `ksent train` will start from)."""
    from pipeline.stages import init_parent

    init_from, artifacts_dir = kwargs.pop("init_from") or defaults.TRAIN["init_from"], kwargs.pop("artifacts_dir")
    corpus, tok = _positional(scope, kwargs)
    run_stage_function(name, corpus, tok, parent=init_parent(corpus, tok, init_from, artifacts_dir,
                                                             kwargs["data_dir"]), **kwargs)


def _then_shared(name: str, scope: str, kwargs: dict) -> None:
    """The stage, then (unless --defer-shared) what reads every corpus's bundles."""
    data_dir, artifacts_dir, defer = kwargs["data_dir"], kwargs["artifacts_dir"], kwargs.pop("defer_shared")
    _run_stage(name, scope, kwargs)
    if not defer:
        after_bundles(data_dir, artifacts_dir)


def _ensemble(name: str, scope: str, kwargs: dict) -> None:
    _then_shared(name, scope, {**kwargs, "members": list(kwargs["members"]) or None})


def _distill(name: str, scope: str, kwargs: dict) -> None:
    from pipeline.corpora import get_corpus

    if kwargs["unlabeled"] == "auto" and get_corpus(kwargs["corpus"]).unlabeled is None:
        click.echo(f"distill {kwargs['corpus']}: skipped - the corpus declares no unlabeled reviews (give "
                   f"--unlabeled PATH)")
        return
    _then_shared(name, scope, kwargs)


def _domains(name: str, scope: str, kwargs: dict) -> None:
    after_bundles(kwargs["data_dir"], kwargs["artifacts_dir"], kwargs["force"])


def _report(name: str, scope: str, kwargs: dict) -> None:
    run_stage_function("report", artifacts_dir=kwargs["artifacts_dir"],
                       stale=graph.stale_models(kwargs["data_dir"], kwargs["artifacts_dir"]), force=True)


_ON = click.option("--on", "others", multiple=True, metavar="CORPUS",
                   help="Also score the bundle on this declared corpus's validation and test splits (repeatable; "
                        "the corpus's data stages must have run). `ksent domains` scores every bundle on every "
                        "corpus.")
_INIT_FROM = click.option("--init-from", metavar="auto|none|BUNDLE_DIR",
                          help="The bundle `ksent train --init-from` will start from: the vocabulary begins with "
                               "its tokens, in its order [default: auto].")
_MEMBER = click.option("--member", "members", multiple=True,
                       help="Bundle folder name to combine (repeatable) [default: every trained bundle of the "
                            "corpus].")
_SEGMENTER = (
    click.option("--pos", multiple=True, help="morpheme: keep only tags starting with this prefix (repeatable)."),
    click.option("--stopwords", type=click.Path(exists=True, dir_okay=False),
                 help="File with one stopword a line (UTF-8, at most 10 MB)."),
    click.option("--with-tags", is_flag=True, help="morpheme: emit morpheme/TAG tokens."),
    click.option("--option", "options", multiple=True, metavar="KEY=VALUE",
                 help="Backend option, e.g. --option stem=true for okt (repeatable)."))

# each registered stage's command: its help, and what it has beyond its scope's options and its parameters
COMMANDS = {
    "download": Command("Fetch the corpus files into DATA_DIR/raw/<corpus>/ and verify their checksums.",
                        leading=(mirror_option,), exclude=("backoff",)),
    "clean": Command("Normalize the raw text (regex profile); count malformed and empty rows.", engine=True,
                     corpus_defaults=("profile", "squeeze", "drop_empty_test"), call=_with_note),
    "dedupe": Command("Remove duplicate texts; report and handle label conflicts and train/test leakage.",
                      engine=True, call=_with_note),
    "split": Command("Assign train/validation/test membership (stratified, seeded).",
                     corpus_defaults=("seed", "val_ratio", "test_ratio"), call=_with_note),
    # its parameters (the tokenizer and backend) are the tokenization's options, which every stage of its scope has
    "tokenize": Command("Segment every cleaned review into tokens (word, char or morpheme).", options=_SEGMENTER,
                        engine=True, params=lambda f: f, call=_tokenize),
    "pretrain": Command("Learn token vectors from the train split plus unlabeled reviews (vectors.npz for pad and "
                        "train).", options=(unlabeled_option,), engine=True),
    "pad": Command("Fit the vocabulary and maxlen on the train split; write padded arrays and tokenizer.json.",
                   options=(_INIT_FROM,), artifacts=True, engine=True, call=_pad),
    "train": Command("Train the Embedding + LSTM classifier; save the bundle in ARTIFACTS_DIR/<corpus>-<tok>/.",
                     artifacts=True, params=train_options),
    "evaluate": Command("Score the bundle on the test split: metrics.json, confusion matrix, REPORT.md.",
                        options=(_ON,), artifacts=True, call=_evaluate),
    "ensemble": Command("Average the corpus's trained bundles into ARTIFACTS_DIR/<corpus>-ensemble/ and score it on "
                        "the test split.", options=(_MEMBER, defer_shared_option), call=_ensemble),
    "distill": Command("Teach one network the corpus's ensemble: the ensemble labels unlabeled reviews, and a "
                       "student bundle, ARTIFACTS_DIR/<corpus>-<tok>-student/, trains on them and the train split, "
                       "then is scored on the test split. A corpus that declares no unlabeled file is skipped "
                       "unless --unlabeled names one.", options=(unlabeled_option, defer_shared_option),
                       call=_distill),
    "router": Command("One model for every corpus: each corpus's best bundle (by validation accuracy) as its "
                      "expert, and a gate that says which corpus a review is like, in ARTIFACTS_DIR/router/."),
    "student": Command("Teach one network every corpus: the router labels each corpus's unlabeled reviews, and one "
                       "student bundle, ARTIFACTS_DIR/student/, trains on them and every corpus's train split "
                       "(the corpora evened out by --balance), then is scored on each test split. Needs bundles of "
                       "two corpora and the router."),
    "domains": Command("Score every bundle on every corpus's validation and test splits (REPORT.md's cross-domain "
                       "matrix, the default model's choice), after the router and the student if two corpora have "
                       "bundles; then the report.", force_help="Score every cell again, even the unchanged ones.",
                       call=_domains),
    "report": Command("Rewrite ARTIFACTS_DIR/REPORT.md from every bundle's metrics.json.", force_help=None,
                      call=_report),
}


def stage_command(name: str) -> click.Command:
    """The click command of registered stage `name`."""
    scope, spec = graph.REGISTRY[name], COMMANDS[name]
    decorators = []                                     # in help order
    if scope in (graph.CORPUS, graph.TOKENIZATION, graph.BUNDLES):
        decorators.append(corpus_option)
    if scope == graph.TOKENIZATION:
        decorators.append(tokenizer_options)
    decorators += [*spec.leading, data_dir_option]
    force = [click.option("--force", is_flag=True, help=spec.force_help)] if spec.force_help else []
    data_scope = scope in (graph.CORPUS, graph.TOKENIZATION)
    if data_scope:                                      # a data stage's --force beside --data-dir, else last
        decorators += force
    if spec.artifacts or not data_scope:
        decorators.append(artifacts_option)
    decorators += spec.options
    group = group_of(name)
    if spec.params:
        decorators.append(spec.params)
    elif group:
        decorators.append(param_options(group, exclude=spec.exclude, corpus_defaults=spec.corpus_defaults))
    if spec.engine:
        decorators.append(engine_options)
    if not data_scope:
        decorators += force

    def command(**kwargs):
        (spec.call or _run_stage)(name, scope, kwargs)

    command.__doc__ = spec.help
    for decorate in reversed(decorators):
        command = decorate(command)
    return click.command(name=name)(command)
