"""Which model `ksent predict`, `ksent serve` and `pipeline.load()` use when none is named."""
from __future__ import annotations

from pathlib import Path
from typing import NamedTuple

from pipeline import layout
from pipeline.core.files import read_json, sha256_file
from pipeline.errors import PipelineError
from pipeline.predict.bundle import BUILD_HINT, MANIFEST_FILE, member_state


def validation_accuracy(directory: Path) -> float:
    """The validation accuracy the train (or ensemble, distill) stage recorded at the bundle's decision
    threshold (never a test figure)."""
    from pipeline.predict.predictor import val_accuracy_of

    try:
        value = val_accuracy_of(read_json(directory / MANIFEST_FILE))
    except (OSError, ValueError, AttributeError):
        value = None
    return float("-inf") if value is None else value


def _changed_members(directory: Path, manifest: dict) -> list[str]:
    """The members of an ensemble (or experts of a router) that were retrained or removed since it was made."""
    changed = []
    for member in manifest.get("members") or manifest.get("experts") or []:
        try:
            if member_state(directory, member):
                changed.append(member["name"])
        except (OSError, KeyError, TypeError):     # a damaged entry: not a usable ensemble either
            changed.append(str(member.get("name") if isinstance(member, dict) else member))
    return changed


class Candidate(NamedTuple):
    corpus: str
    val_accuracy: float             # the train or ensemble stage's; -inf if none was recorded (routers)
    directory: Path
    kind: str | None                # "ensemble", "router", or None for a single network


def usable_bundles(artifacts_dir: Path | str = layout.ARTIFACTS_DIR, notes: list[str] | None = None,
                   routers: bool = False) -> list[Candidate]:
    """Every bundle in `artifacts_dir` (routers only if asked). An ensemble or router whose members changed
    since it was made is left out, with a note in `notes`."""
    bundles = []
    for manifest_path in layout.bundle_manifests(artifacts_dir):
        try:
            manifest = read_json(manifest_path)
            corpus, kind = manifest.get("corpus"), manifest.get("kind")
        except (OSError, ValueError, AttributeError):
            continue
        if kind == "router" and not routers:
            continue
        changed = _changed_members(manifest_path.parent, manifest) if kind in ("ensemble", "router") else []
        if changed:
            if notes is not None:
                remake = "ksent router" if kind == "router" else f"ksent ensemble --corpus {corpus}"
                notes.append(f"{manifest_path.parent} is out of date (member {', '.join(changed)} changed since it "
                             f"was made), so it is not the default model - re-make it: `{remake}`")
            continue
        bundles.append(Candidate(corpus, validation_accuracy(manifest_path.parent), manifest_path.parent, kind))
    return bundles


def _mean_validation_over_corpora(artifacts_dir: Path, bundles: list[Candidate]) -> dict[Path, float]:
    """Each bundle's validation accuracy averaged over every corpus, corpora weighted equally, from the domains
    stage's cells (those of the bundle.json now in place); empty without domains.json or with one corpus."""
    try:
        domains = read_json(artifacts_dir / layout.DOMAINS_FILE)
        corpora, cells = domains["corpora"], domains["bundles"]
    except (OSError, ValueError, KeyError, TypeError):
        return {}
    if len(corpora) < 2:
        return {}
    means = {}
    for directory in (b.directory for b in bundles):
        entry = cells.get(directory.name) or {}
        try:
            if entry.get("bundle_sha256") != sha256_file(directory / MANIFEST_FILE):
                continue
            means[directory] = sum(float(entry["cells"][c]["val"]["accuracy"]) for c in corpora) / len(corpora)
        except (OSError, KeyError, TypeError, ValueError):
            continue
    return means


def default_model_dir(artifacts_dir: Path | str = layout.ARTIFACTS_DIR, notes: list[str] | None = None) -> Path:
    """The model for "new Korean text": with bundles of several corpora scored by the domains stage, the one
    with the best validation accuracy averaged over the corpora (each weighing the same); else the NSMC bundle
    with the highest validation accuracy, else the best other bundle. An ensemble or router whose members
    changed since it was made is passed over, with a note in `notes`."""
    bundles = usable_bundles(artifacts_dir, notes, routers=True)
    if not bundles:
        raise PipelineError(f"no trained model in {artifacts_dir}/ - build one with `{BUILD_HINT}` "
                            f"(or `ksent run --corpus nsmc`), or pass --model DIR")
    across = _mean_validation_over_corpora(Path(artifacts_dir), bundles)
    if across:
        return max(across, key=lambda directory: (across[directory], directory.name))
    single = [b for b in bundles if b.kind != "router"]      # a router is chosen on the domains' cells only
    return max(single or bundles, key=lambda b: (b.corpus == "nsmc", b.val_accuracy)).directory


def measured_speeds(data: dict) -> dict[str, float]:
    """Each bundle's measured reviews/s on the largest test split scored (the same texts for every bundle):
    raw text to probability in one process, as the domains stage timed it."""
    out = {}
    for name, b in data.get("bundles", {}).items():
        tests = [c.get("test") or {} for _, c in sorted((b.get("cells") or {}).items())]   # ties: first by name
        tests = [t for t in tests if t.get("seconds") and t.get("n")]
        if tests:
            largest = max(tests, key=lambda t: t["n"])
            out[name] = largest["n"] / largest["seconds"]
    return out



def model_menu(artifacts_dir: Path | str = layout.ARTIFACTS_DIR) -> list[str]:
    """"name (val 0.8797, 5,650 reviews/s)" for each usable bundle, best validation accuracy first: the accuracy the
    default model is chosen on (averaged over the corpora when the domains stage scored several), and the speed
    the domains stage measured. Empty when nothing is trained."""
    bundles = usable_bundles(artifacts_dir, routers=True)
    across = _mean_validation_over_corpora(Path(artifacts_dir), bundles)
    try:
        rates = measured_speeds(read_json(Path(artifacts_dir) / layout.DOMAINS_FILE))
    except (OSError, ValueError, AttributeError):
        rates = {}
    val = {b.directory: across.get(b.directory, b.val_accuracy if not across else float("-inf")) for b in bundles}
    entries = []
    for directory in sorted(val, key=lambda d: (-val[d], d.name)):
        figures = [f"val {val[directory]:.4f}"] if val[directory] != float("-inf") else []
        if directory.name in rates:
            figures.append(f"{rates[directory.name]:,.0f} reviews/s")
        entries.append(f"{directory.name} ({', '.join(figures) or 'not scored'})")
    return entries
