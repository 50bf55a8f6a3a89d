"""`ksent status`: for one corpus and tokenization, which stages are up to date, stale (and why) or missing.

What `dvc status` gives a data engineer before a long re-run: each stage is compared,
without running anything, with what `ksent run` would do now (default parameters, or
the ones given), through the same checks `run_stage` makes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pipeline import layout, params as defaults
from pipeline.core.files import sha256_file
from pipeline.core.stage import Stage, input_problem, stale_reasons
from pipeline.corpora import get_corpus, verify_file

UPSTREAM = {"clean": ("download",), "dedupe": ("clean",), "split": ("dedupe",), "tokenize": ("dedupe",),
            "pretrain": ("tokenize", "split", "clean"), "pad": ("tokenize", "split", "clean", "pretrain"),
            "train": ("pad", "pretrain"), "evaluate": ("train", "pad")}


@dataclass
class StageStatus:
    stage: str
    state: str                      # "up to date" | "stale" | "missing"
    reasons: list[str] = field(default_factory=list)
    command: str = ""

    def line(self) -> str:
        why = f": {'; '.join(self.reasons)}" if self.reasons else ""
        return f"  {self.stage:<9} {self.state}{why}"


def _download_status(corpus: str, data_dir: Path) -> StageStatus:
    raw_dir = data_dir / "raw" / corpus
    reasons, missing = [], 0
    for f in get_corpus(corpus).files:
        path = raw_dir / f.name
        if not path.is_file():
            missing += 1
            reasons.append(f"{f.name} missing")
        elif not verify_file(path, f)[0]:
            reasons.append(f"{f.name} differs from the pinned upstream file")
    state = "missing" if missing == len(get_corpus(corpus).files) else ("stale" if reasons else "up to date")
    return StageStatus("download", state, reasons, f"ksent download --corpus {corpus}")


def _input_hashes(stage: Stage) -> tuple[dict[str, str | None], list[str]]:
    """Current input hashes (None: missing), and why an input is not what its producer made."""
    hashes, problems = {}, []
    for name, inp in sorted(stage.inputs.items()):
        hashes[name] = sha256_file(inp.path) if inp.path.is_file() else None
        problem = hashes[name] and input_problem(inp, hashes[name])
        if problem:
            problems.append(problem)
    return hashes, problems


def pipeline_status(corpus: str, segmenter, *, data_dir: Path | str = layout.DATA_DIR,
                    artifacts_dir: Path | str = layout.ARTIFACTS_DIR, train_params: dict | None = None
                    ) -> list[StageStatus]:
    """The status of every stage for `corpus` tokenized by `segmenter`, in pipeline order."""
    from pipeline.stages import clean, dedupe, evaluate, pad, pretrain, split, tokenize, train

    data_dir, tok = Path(data_dir), segmenter.name()
    plans = [clean.plan(corpus, data_dir=data_dir), dedupe.plan(corpus, data_dir=data_dir),
             split.plan(corpus, data_dir=data_dir), tokenize.plan(corpus, segmenter, data_dir=data_dir),
             pretrain.plan(corpus, tok, data_dir=data_dir, **defaults.pretrain_params(tok, train_params)),
             pad.plan(corpus, tok, data_dir=data_dir),
             train.plan(corpus, tok, data_dir=data_dir, artifacts_dir=artifacts_dir, **(train_params or {})),
             evaluate.plan(corpus, tok, data_dir=data_dir, artifacts_dir=artifacts_dir)]
    statuses = {"download": _download_status(corpus, data_dir)}
    for stage in plans:
        hashes, problems = _input_hashes(stage)
        reasons = problems + stale_reasons(stage, hashes)
        if not stage.manifest_path.is_file() and not any(p.exists() for p in stage.output_paths().values()):
            state, reasons = "missing", []
        else:
            state = "stale" if reasons else "up to date"
        after = [up for up in UPSTREAM[stage.name] if statuses[up].state != "up to date"]
        if after and state == "up to date":
            state = "stale"
        if after and state != "missing":
            reasons.append(f"re-runs after {', '.join(after)}")
        statuses[stage.name] = StageStatus(stage.name, state, reasons, stage.command())
    return list(statuses.values())
