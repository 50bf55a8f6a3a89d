"""The stage graph: every stage registered once, and `ksent run`, `ksent status` and the Makefile's
stage targets derived from it (after DVC, which derives `repro` and `status` from declared
dependencies).

A stage is a module pipeline.stages.<name> with `plan_for(target)` (its Stage: inputs, parameters,
outputs) and `run_for(target, force=, echo=)`. Each declared input names the stage that wrote it:
those are the graph's edges, so the order is derived, never written down. Registering a stage
is one line in REGISTRY: its name and scope, what one run of it works on:

    corpus        one corpus (download, clean, dedupe, split)
    tokenization  one corpus and tokenization (tokenize ... evaluate)
    bundles       all trained bundles of a corpus (ensemble; distill, which the ensemble teaches)
    corpora       the bundles of every corpus (router; student, which the router teaches)
    artifacts     the whole artifacts folder (domains, report)

Among stages free to run, the narrower scope goes first, then the name: a stage of a wider
scope waits for every narrower one of the target.
"""
from __future__ import annotations

import dataclasses
import heapq
import importlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

from pipeline import layout
from pipeline.errors import PipelineError

if TYPE_CHECKING:       # imported where used: the CLI builds its commands from REGISTRY at every start
    from pipeline.core.stage import Stage, StageResult, Target

CORPUS, TOKENIZATION, BUNDLES, CORPORA, ARTIFACTS = "corpus", "tokenization", "bundles", "corpora", "artifacts"
SCOPES = (CORPUS, TOKENIZATION, BUNDLES, CORPORA, ARTIFACTS)

# stage name -> scope, listed by name (the run order comes from the declared inputs)
REGISTRY = {
    "clean": CORPUS,
    "dedupe": CORPUS,
    "distill": BUNDLES,
    "domains": ARTIFACTS,
    "download": CORPUS,
    "ensemble": BUNDLES,
    "evaluate": TOKENIZATION,
    "pad": TOKENIZATION,
    "pretrain": TOKENIZATION,
    "report": ARTIFACTS,
    "router": CORPORA,
    "split": CORPUS,
    "student": CORPORA,
    "tokenize": TOKENIZATION,
    "train": TOKENIZATION,
}
# `ksent run` builds one corpus and tokenization - and re-makes the corpus's other trained tokenizations where
# they fell behind, so that its ensemble, student and the router never mix bundles of two splits; a stage of
# several tokenizations (the ensemble) only once it exists, to keep it up to date with its members
RUN_SCOPES = (CORPUS, TOKENIZATION, ARTIFACTS)


def names(*scopes: str) -> list[str]:
    """The registered stages of these scopes (all if none), by name."""
    return [name for name, scope in REGISTRY.items() if not scopes or scope in scopes]


def stage_module(name: str) -> ModuleType:
    if name not in REGISTRY:
        raise PipelineError(f"unknown stage {name!r}; the stages are: {', '.join(REGISTRY)}")
    return importlib.import_module(f"pipeline.stages.{name}")


def label(name: str, target: Target) -> str:
    scope = REGISTRY[name]
    if scope in (CORPORA, ARTIFACTS):
        return ""
    return layout.label(target.corpus, target.tok if scope == TOKENIZATION else None)


def upstream(stage: Stage) -> set[str]:
    """The stages whose outputs `stage` reads."""
    return {inp.stage for inp in stage.inputs.values() if inp.stage and inp.edge}


def plan(target: Target, stages: list[str]) -> tuple[dict[str, Stage], dict[str, PipelineError]]:
    """Each stage's plan for `target`, and why a stage cannot be planned now (a bad parameter, or an
    ensemble of fewer than two trained bundles)."""
    plans, problems = {}, {}
    for name in stages:
        try:
            plans[name] = stage_module(name).plan_for(target)
        except PipelineError as exc:
            problems[name] = exc
    return plans, problems


def order(plans: dict[str, Stage | None]) -> list[str]:
    """Every stage after the stages it reads from (a stage planned as None has no known inputs)."""
    waiting = {name: (upstream(stage) & set(plans)) - {name} if stage else set() for name, stage in plans.items()}

    def key(name: str) -> tuple[int, str]:
        return SCOPES.index(REGISTRY[name]), name

    ready = [key(name) for name, deps in waiting.items() if not deps]
    heapq.heapify(ready)
    ordered: list[str] = []
    while ready:
        _, name = heapq.heappop(ready)
        ordered.append(name)
        for other, deps in waiting.items():
            if name in deps:
                deps.discard(name)
                if not deps:
                    heapq.heappush(ready, key(other))
    if len(ordered) < len(waiting):
        raise PipelineError(f"the stage graph has a cycle among {', '.join(sorted(set(waiting) - set(ordered)))}")
    return ordered


def bundle_target(template: Target, bundle: Path) -> Target | None:
    """`template` for the corpus and tokenization of trained bundle folder `bundle`, as it was made: its segmenter
    and training parameters (its tokenizer.json and bundle.json) and the unlabeled reviews its vectors were
    pretrained on (pretrain's manifest); None for a bundle that cannot be read."""
    from pipeline.core.files import read_json
    from pipeline.text.segment import Segmenter

    try:
        manifest = read_json(bundle / layout.BUNDLE_FILE)
        segmenter = Segmenter.from_dict(read_json(bundle / layout.TOKENIZER_FILE)["segmenter"])
        train_params = dict((manifest.get("training") or {}).get("params") or {})
        corpus = manifest["corpus"]
    except (OSError, ValueError, KeyError, TypeError, AttributeError, PipelineError):
        return None
    pretrain = layout.processed_dir(template.data_dir, corpus, segmenter.name()) / "pretrain.manifest.json"
    try:
        unlabeled = str(read_json(pretrain)["params"]["unlabeled"])
    except (OSError, ValueError, KeyError, TypeError):
        unlabeled = template.unlabeled
    return dataclasses.replace(template, corpus=corpus, segmenter=segmenter, unlabeled=unlabeled,
                               train_params=train_params)


def siblings(target: Target) -> list[Target]:
    """The corpus's other trained tokenizations, each as its bundle was made (`bundle_target`)."""
    from pipeline.stages import trained_bundles

    found = []
    for name, tok in trained_bundles(target.corpus, target.artifacts_dir).items():
        if target.segmenter is not None and tok == target.tok:
            continue
        bundle = layout.bundle_dir(target.artifacts_dir, target.corpus, tok)
        if bundle.name != name:
            continue                            # a copy under another name: not a tokenization of this layout
        other = bundle_target(target, bundle)
        if other is not None:                   # a damaged bundle: `ksent status` shows its stages
            found.append(other)
    return found


def run(target: Target, *, force: bool = False, echo: Callable[[str], None] | None = None,
        until: str | None = None, shared: bool = True) -> list[StageResult]:
    """Every stage of RUN_SCOPES for `target`, in graph order, each skipped when up to date; then the corpus's
    other trained tokenizations wherever they fell behind (`siblings`: a new split or declaration re-makes
    every bundle of the corpus), the corpus's ensemble and student if it has them (re-made when a member
    changed, so they never fall behind), and the router once two corpora have bundles. `force` re-runs the
    target's stages and those after them. `until`: only that stage and the stages it reads from, for `target`.
    `shared` False leaves the stages that read every corpus's bundles (`run_after_bundles`) to a later call."""
    plans, problems = plan(target, names(CORPUS, TOKENIZATION))
    if problems:                    # every parameter is checked before the first stage runs
        raise next(iter(problems.values()))
    if until is not None:
        plans.update(plan(target, names(ARTIFACTS))[0])
        if until not in plans:
            raise PipelineError(f"ksent run --until: {until} is not one of its stages ({', '.join(order(plans))})")
        plans = {name: plans[name] for name in _reads_from(plans, until) | {until}}
        return [stage_module(name).run_for(target, force=force, echo=echo) for name in order(plans)]
    others = siblings(target)
    for other in others:
        _, problems = plan(other, names(TOKENIZATION))
        if problems:
            raise next(iter(problems.values()))
    results = [stage_module(name).run_for(target, force=force, echo=echo) for name in order(plans)]
    for other in others:
        results += [stage_module(name).run_for(other, echo=echo) for name in order(plan(other, names(TOKENIZATION))[0])]
    wide, _ = plan(target, names(BUNDLES))
    wide = {name: stage for name, stage in wide.items() if stage.manifest_path.is_file()}
    results += [stage_module(name).run_for(target, force=force, echo=echo) for name in order(wide)]
    return results + (run_after_bundles(target, force=force, echo=echo) if shared else [])


def run_after_bundles(target: Target, *, force: bool = False,
                      echo: Callable[[str], None] | None = None) -> list[StageResult]:
    """The stages that read the bundles of every corpus (scopes corpora and artifacts: the router, planned only
    once two corpora have bundles; the domains matrix; the report), in graph order. `target`: its folders (no
    corpus of its own is read)."""
    wide, _ = plan(target, names(CORPORA))
    wide.update(plan(target, names(ARTIFACTS))[0])
    results = []
    for name in order(wide):
        # the report marks the models that are stale by then (only the graph knows which)
        at = dataclasses.replace(target, stale=stale_models(target.data_dir, target.artifacts_dir)) \
            if name == "report" else target
        results.append(stage_module(name).run_for(at, force=force, echo=echo))
    return results


def _reads_from(plans: dict[str, Stage], name: str) -> set[str]:
    """The stages whose outputs `name` reads, directly or through others."""
    found, todo = set(), [name]
    while todo:
        for up in upstream(plans[todo.pop()]) & set(plans):
            if up not in found:
                found.add(up)
                todo.append(up)
    return found


@dataclass
class StageStatus:
    stage: str
    state: str                      # "up to date" | "stale" | "missing" | "blocked"
    reasons: list[str] = field(default_factory=list)
    command: str = ""
    tok: str | None = None          # a sibling tokenization's name (None: the target's, or no tokenization)

    @property
    def name(self) -> str:
        return f"{self.stage} ({self.tok})" if self.tok else self.stage

    def line(self, width: int = 9) -> str:
        why = f": {'; '.join(self.reasons)}" if self.reasons else ""
        return f"  {self.name:<{width}} {self.state}{why}"


def _input_hashes(stage: Stage) -> tuple[dict[str, str | None], list[str]]:
    """Current input hashes (None: missing), and why an input is not what its producer made."""
    from pipeline.core.files import sha256_file
    from pipeline.core.stage import input_problem

    hashes, problems = {}, []
    for name, inp in sorted(stage.inputs.items()):
        hashes[name] = sha256_file(inp.path) if inp.path.is_file() else None
        problem = hashes[name] and input_problem(inp, hashes[name])
        if problem:
            problems.append(problem)
    return hashes, problems


def status(target: Target) -> list[StageStatus]:
    """Every registered stage for `target`, in graph order: up to date, stale (and why), missing, or
    blocked (cannot be planned yet), without running anything - through the checks run_stage makes. The
    corpus's other trained tokenizations (`siblings`) follow the target's own stages, where `ksent run`
    would re-make them."""
    plans, problems = plan(target, names())
    ordered = order({**plans, **dict.fromkeys(problems)})
    narrow = [name for name in ordered if REGISTRY[name] in (CORPUS, TOKENIZATION)]
    statuses: dict[tuple[str, str | None], StageStatus] = {}
    _statuses(target, narrow, plans, problems, statuses, None)
    for other in siblings(target):
        other_plans, other_problems = plan(other, names(TOKENIZATION))
        _statuses(other, order({**other_plans, **dict.fromkeys(other_problems)}), other_plans, other_problems,
                  statuses, other.tok)
    _statuses(target, [name for name in ordered if name not in narrow], plans, problems, statuses, None)
    return list(statuses.values())


def _statuses(target: Target, stages: list[str], plans: dict[str, Stage], problems: dict[str, PipelineError],
              statuses: dict, tok: str | None) -> None:
    """The status of each of `stages` of `target` (planned as `plans`) into `statuses`, keyed by (stage, tok):
    a stage is stale after a stage it reads from that is not up to date (its own tokenization's, or any for
    a stage of several)."""
    from pipeline.core.stage import stale_reasons

    for name in stages:
        if name in problems:
            statuses[name, tok] = StageStatus(name, "blocked", [str(problems[name])],
                                              layout.rerun_command(name, label(name, target)), tok)
            continue
        stage = plans[name]
        hashes, bad_inputs = _input_hashes(stage)
        reasons = bad_inputs + stale_reasons(stage, hashes)
        if not stage.manifest_path.is_file() and not any(p.exists() for p in stage.output_paths().values()):
            state, reasons = "missing", []
        else:
            state = "stale" if reasons else "up to date"
        wide = REGISTRY[name] not in (CORPUS, TOKENIZATION)
        after = sorted({up for up in upstream(stage) for (other, other_tok), row in statuses.items()
                        if other == up and row.state != "up to date"
                        and (wide or other_tok == tok or REGISTRY[up] == CORPUS)})
        if after and state == "up to date":
            state = "stale"
        if after and state != "missing":
            reasons.append(f"re-runs after {', '.join(after)}")
        statuses[name, tok] = StageStatus(name, state, reasons, stage.command(), tok)


def stale_models(data_dir: Path | str = layout.DATA_DIR, artifacts_dir: Path | str = layout.ARTIFACTS_DIR
                 ) -> dict[str, str]:
    """Bundle folder name -> why `ksent run` would make it again (the first reason `ksent status` gives), for
    every bundle in `artifacts_dir` whose inputs changed since it was made: its corpus's declaration, files,
    split or parameters, an ensemble's or router's members, a student's teacher. A stage that never ran (data
    deleted after training) does not make a model stale."""
    from pipeline.core.files import read_json
    from pipeline.core.stage import Target
    from pipeline.corpora import CORPORA
    from pipeline.predict.bundle import member_state

    found: dict[str, str] = {}
    manifests = {}
    for path in layout.bundle_manifests(artifacts_dir):
        try:
            manifests[path.parent.name] = read_json(path)
        except (OSError, ValueError):
            continue
    corpus_rows: dict[str, list[StageStatus]] = {}

    def first_stale(rows: list[StageStatus]) -> str | None:
        for row in rows:
            if row.state == "stale":
                return f"{row.stage}: {row.reasons[0] if row.reasons else 'stale'}"
        return None

    for name, manifest in manifests.items():          # single networks: their corpus's stages and their own
        corpus, kind = manifest.get("corpus"), manifest.get("kind", "model")
        if kind != "model" or not isinstance(corpus, str):
            continue
        joint = (manifest.get("distillation") or {}).get("corpora")
        if isinstance(joint, dict):     # the student stage's, of several corpora: stale through the router (below)
            undeclared = sorted(set(joint) - set(CORPORA))
            if undeclared:
                found[name] = f"its corpus {undeclared[0]} is no longer declared"
            continue
        if corpus not in CORPORA:
            found[name] = f"its corpus {corpus} is no longer declared"
            continue
        target = bundle_target(Target(corpus, data_dir=data_dir, artifacts_dir=artifacts_dir),
                               Path(artifacts_dir) / name)
        if target is None:
            continue
        if corpus not in corpus_rows:
            plans, problems = plan(target, names(CORPUS))
            statuses: dict = {}
            _statuses(target, order(plans), plans, problems, statuses, None)
            corpus_rows[corpus] = list(statuses.values())
        why = first_stale(corpus_rows[corpus])
        if why is None and "distillation" not in manifest:
            plans, problems = plan(target, names(TOKENIZATION))
            statuses = {(row.stage, None): row for row in corpus_rows[corpus]}
            _statuses(target, order(plans), plans, problems, statuses, None)
            why = first_stale([row for key, row in statuses.items() if REGISTRY[key[0]] == TOKENIZATION])
        if why:
            found[name] = why
    for _ in range(3):              # ensembles and students, then routers of them, then the router's student
        for name, manifest in manifests.items():
            parts = manifest.get("members") or manifest.get("experts") or []
            teacher = (manifest.get("distillation") or {}).get("teacher")
            if teacher:
                parts = [{"name": teacher, "bundle_sha256": manifest["distillation"].get("teacher_bundle_sha256")}]
            what = "teacher" if teacher else "expert" if manifest.get("experts") else "member"
            reasons = []
            for part in parts:
                try:
                    state = member_state(Path(artifacts_dir) / name, part)
                except (OSError, KeyError, TypeError, AttributeError):
                    state = "damaged"
                if state:
                    reasons.append(f"{what} {part.get('name') if isinstance(part, dict) else part} {state} since")
                elif part.get("name") in found:
                    reasons.append(f"{what} {part['name']} is stale")
            if reasons:
                found[name] = "; ".join(reasons)
    return found


def build_plan(corpora: list[str], segmenters: list, template: Target, force: bool = False
               ) -> tuple[dict[str, float | None], dict[str, str]]:
    """What `make all` over `corpora` and `segmenters` will run, in order: each stage not up to date (`force`:
    every stage; "train nsmc/word"), with the duration its manifest recorded the last time it ran (None if it
    never did); and the lane of each tokenization stage (its tokenizer's name: `make all` runs a tokenization's
    stages one after another, a few tokenizations side by side). Per-corpus students only for one corpus, the
    router's student only for several (as `make all` makes them)."""
    from pipeline.core.files import read_json

    several = len(corpora) > 1
    left_out = {"distill"} if several else {"router", "student"}
    planned: dict[str, float | None] = {}
    shared: dict[str, float | None] = {}            # router, student, domains, report: once, at the end
    lanes: dict[str, str] = {}
    for corpus in corpora:
        for segmenter in segmenters:
            target = dataclasses.replace(template, corpus=corpus, segmenter=segmenter)
            plans, _ = plan(target, names())
            for row in status(target):
                if row.tok is not None or (row.state == "up to date" and not force) or row.stage in left_out:
                    continue
                if REGISTRY[row.stage] == BUNDLES and len(segmenters) < 2:
                    continue                    # one tokenization: no ensemble, no student of one
                what = f"{row.stage} {label(row.stage, target)}".rstrip()
                try:
                    recorded = read_json(plans[row.stage].manifest_path).get("duration_s")
                except (KeyError, OSError, ValueError, AttributeError):
                    recorded = None
                (shared if REGISTRY[row.stage] in (CORPORA, ARTIFACTS) else planned).setdefault(
                    what, recorded if isinstance(recorded, (int, float)) else None)
                if REGISTRY[row.stage] == TOKENIZATION:
                    lanes[what] = segmenter.name()
    return planned | shared, lanes
