"""Which model `ksent predict`, `ksent serve` and `pipeline.load()` use when none is named."""
from __future__ import annotations

from pathlib import Path

from pipeline import layout
from pipeline.core.files import read_json
from pipeline.errors import PipelineError
from pipeline.predict.bundle import BUILD_HINT, MANIFEST_FILE, member_state


def _validation_accuracy(directory: Path) -> float:
    """The best validation accuracy the train stage recorded (never a test figure)."""
    for path, keys in ((directory / "train.manifest.json", ("counts",)), (directory / MANIFEST_FILE, ("training",))):
        try:
            value = read_json(path)[keys[0]]["best_val_accuracy"]
            return float(value)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return float("-inf")


def _changed_members(directory: Path, manifest: dict) -> list[str]:
    """The members of an ensemble bundle that were retrained (or removed) since it was made."""
    changed = []
    for member in manifest.get("members") or []:
        try:
            if member_state(directory, member):
                changed.append(member["name"])
        except (OSError, KeyError, TypeError):     # a damaged entry: not a usable ensemble either
            changed.append(str(member.get("name") if isinstance(member, dict) else member))
    return changed


def default_model_dir(artifacts_dir: Path | str = layout.ARTIFACTS_DIR, notes: list[str] | None = None) -> Path:
    """The NSMC bundle with the highest validation accuracy, else the best other bundle. An ensemble
    whose members changed since it was made is passed over, with a note in `notes`."""
    bundles = []
    for manifest_path in sorted(Path(artifacts_dir).glob(f"*/{MANIFEST_FILE}")):
        try:
            manifest = read_json(manifest_path)
            corpus = manifest.get("corpus")
        except (OSError, ValueError, AttributeError):
            continue
        changed = _changed_members(manifest_path.parent, manifest) if manifest.get("kind") == "ensemble" else []
        if changed:
            if notes is not None:
                notes.append(f"{manifest_path.parent} is out of date (member {', '.join(changed)} changed since it "
                             f"was made), so it is not the default model - re-make it: `ksent ensemble --corpus "
                             f"{corpus}`")
            continue
        bundles.append((corpus == "nsmc", _validation_accuracy(manifest_path.parent), manifest_path.parent))
    if not bundles:
        raise PipelineError(f"no trained model in {artifacts_dir}/ - build one with `{BUILD_HINT}` "
                            f"(or `ksent run --corpus nsmc`), or pass --model DIR")
    nsmc_first = max(bundles, key=lambda b: (b[0], b[1]))
    return nsmc_first[2]
