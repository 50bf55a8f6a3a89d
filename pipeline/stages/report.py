"""report: artifacts/REPORT.md, every bundle's test figures side by side (pipeline.reporting).

Inputs: each <bundle>/metrics.json in the artifacts folder, written by the evaluate stage (or the
ensemble stage, for an ensemble bundle). It summarizes what it finds: a metrics.json that cannot
be read is named in the report, not refused. Output: REPORT.md, committed like any stage's.
`ksent evaluate`, `ksent ensemble` and `ksent run` run it after themselves.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from pipeline import layout
from pipeline.core.files import write_text
from pipeline.core.stage import Input, Stage, StageResult, Staging, Target, run_stage
from pipeline.reporting import report_text
from pipeline.stages import bundle_producer


def _listed_as_found(path: Path) -> None:
    """REPORT.md lists every metrics.json as it finds it (an unreadable one by name): nothing to refuse."""


def _producer(bundle: Path) -> str:
    """The stage that wrote the bundle's metrics.json: evaluate for a trained bundle, else the bundle's own."""
    producer = bundle_producer(bundle)
    return "evaluate" if producer == "train" else producer


def plan(*, artifacts_dir: Path | str = layout.ARTIFACTS_DIR, stale: dict[str, str] | None = None) -> Stage:
    """`stale`: bundle name -> why it would be made again (pipeline.graph.stale_models), marked in the report."""
    folder = Path(artifacts_dir)
    inputs = {f"{path.parent.name}/{path.name}": Input(path, _producer(path.parent), _listed_as_found)
              for path in sorted(folder.glob(f"*/{layout.METRICS_FILE}"))}
    if (folder / layout.DOMAINS_FILE).is_file():     # the cross-domain matrix, once the domains stage wrote it
        inputs[layout.DOMAINS_FILE] = Input(folder / layout.DOMAINS_FILE, "domains", _listed_as_found)
    return Stage("report", "", folder, inputs=inputs, params={"stale": dict(sorted((stale or {}).items()))},
                 outputs=(layout.REPORT_FILE,))


def plan_for(t: Target) -> Stage:
    return plan(artifacts_dir=t.artifacts_dir, stale=t.stale)


def run_for(t: Target, **kwargs) -> StageResult:
    return report(artifacts_dir=t.artifacts_dir, stale=t.stale, **kwargs)


def report(*, artifacts_dir: Path | str = layout.ARTIFACTS_DIR, stale: dict[str, str] | None = None,
           force: bool = False, echo: Callable[[str], None] | None = None) -> StageResult:
    """Rewrite <artifacts_dir>/REPORT.md from every <bundle>/metrics.json, marking the `stale` bundles."""
    stage = plan(artifacts_dir=artifacts_dir, stale=stale)

    def run(out: Staging) -> StageResult:
        text, rows = report_text(stage.folder, stage.params["stale"])
        write_text(out.path(layout.REPORT_FILE), text)
        return StageResult(summary=f"report: {rows} evaluated bundle(s) -> {layout.report_path(artifacts_dir)}",
                           counts={"bundles": rows})

    return run_stage(stage, run, force=force, echo=echo)
