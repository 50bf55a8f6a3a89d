"""Which model `ksent predict`, `ksent serve` and `pipeline.load()` use when none is named."""
from __future__ import annotations

from pathlib import Path

from pipeline import layout
from pipeline.core.files import read_json
from pipeline.errors import PipelineError
from pipeline.predict.bundle import BUILD_HINT, MANIFEST_FILE


def _validation_accuracy(directory: Path) -> float:
    """The best validation accuracy the train stage recorded (never a test figure)."""
    for path, keys in ((directory / "train.manifest.json", ("counts",)), (directory / MANIFEST_FILE, ("training",))):
        try:
            value = read_json(path)[keys[0]]["best_val_accuracy"]
            return float(value)
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return float("-inf")


def default_model_dir(artifacts_dir: Path | str = layout.ARTIFACTS_DIR) -> Path:
    """The NSMC bundle with the highest validation accuracy, else the best other bundle."""
    bundles = []
    for manifest_path in sorted(Path(artifacts_dir).glob(f"*/{MANIFEST_FILE}")):
        try:
            corpus = read_json(manifest_path).get("corpus")
        except (OSError, ValueError, AttributeError):
            continue
        bundles.append((corpus == "nsmc", _validation_accuracy(manifest_path.parent), manifest_path.parent))
    if not bundles:
        raise PipelineError(f"no trained model in {artifacts_dir}/ - build one with `{BUILD_HINT}` "
                            f"(or `ksent run --corpus nsmc`), or pass --model DIR")
    nsmc_first = max(bundles, key=lambda b: (b[0], b[1]))
    return nsmc_first[2]
