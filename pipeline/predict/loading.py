"""`load_bundle`: any bundle folder, by the kind its bundle.json names - a single trained model
(pipeline.predict.bundle), an ensemble of them (pipeline.predict.ensemble) or a router over the corpora's
best (pipeline.predict.router) - each checked before any review is read: PipelineError says what is
wrong and what to do."""
from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

from pipeline.core.files import sha256_file
from pipeline.errors import PipelineError
from pipeline.layout import is_plain_name
from pipeline.model.gate import DomainGate
from pipeline.params import RUNTIME, RUNTIMES
from pipeline.predict.bundle import BUILD_HINT, MANIFEST_FILE, load_single, member_state, read_manifest
from pipeline.predict.ensemble import COMBINATIONS, EnsembleBundle
from pipeline.predict.predictor import Predictor, threshold_of
from pipeline.predict.router import RouterBundle


def load_bundle(directory: Path | str, runtime: str = RUNTIME, sleeping_threads: bool = False) -> Predictor:
    """Load and cross-check a bundle folder.

    Checked: bundle.json, tokenizer.json and the network file are present and readable;
    each has the SHA-256 recorded at training time; the tokenizer's fingerprint and
    vocabulary size match the model's; an ensemble's members and a router's experts are the very
    bundles it was made from. runtime: "auto" runs model.onnx when bundle.json
    records one and onnxruntime is installed, else model.keras (with a note); "onnx" or
    "keras" insists on one; "onnx-int8" runs model.int8.onnx (an ensemble's or router's members
    theirs), close to model.onnx but not equal. sleeping_threads: see pipeline.predict.runtime.OnnxNetwork.
    """
    if runtime not in RUNTIMES:
        raise PipelineError(f"runtime must be one of {', '.join(RUNTIMES)}, got {runtime!r}")
    directory = Path(directory)
    if not directory.is_dir():
        raise PipelineError(f"no model bundle at {directory} - train one (`{BUILD_HINT}`) or pass --model DIR")
    manifest = read_manifest(directory) if (directory / MANIFEST_FILE).is_file() else {}
    threshold_of(manifest)                       # a damaged threshold is refused here, not at the first review
    loader = LOADERS.get(manifest.get("kind", "model"), load_single)
    return loader(directory, manifest, runtime, sleeping_threads)


def _members(directory: Path, manifest: dict, key: str, role: str, rerun: str,
             load: Callable[[Path], Predictor]) -> tuple[list[Predictor], list[str]]:
    """The bundles an ensemble's or router's manifest lists under `key` (each a `role`), each the very bundle
    (by bundle.json checksum) it was made from; and their notes."""
    kind = manifest["kind"]
    loaded, notes = [], []
    for entry in manifest[key]:
        state = member_state(directory, entry)
        if state == "missing":
            raise PipelineError(f"{kind} {directory}: its {role} {entry['name']} is missing (no "
                                f"{directory.parent / entry['name'] / MANIFEST_FILE}) - make it again, or re-run "
                                f"{rerun} without it")
        if state == "changed":
            raise PipelineError(f"{kind} {directory}: its {role} {entry['name']} changed since the {kind} was made "
                                f"(bundle.json checksum differs; retrained?) - re-run {rerun}")
        bundle = load(directory.parent / entry["name"])
        loaded.append(bundle)
        notes.extend(bundle.notes)
    return loaded, notes


def _load_ensemble(directory: Path, manifest: dict, runtime: str, sleeping_threads: bool) -> EnsembleBundle:
    """An ensemble bundle: no network or tokenizer of its own, its members have theirs."""
    members, weights = manifest.get("members"), manifest.get("weights")
    if not (isinstance(members, list) and isinstance(weights, list) and len(members) == len(weights) >= 2
            and all(isinstance(m, dict) and is_plain_name(m.get("name")) and isinstance(m.get("bundle_sha256"), str)
                    for m in members)
            and all(isinstance(w, (int, float)) and not isinstance(w, bool) and math.isfinite(w) and w >= 0
                    for w in weights) and sum(weights) > 0):
        raise PipelineError(f"{directory / MANIFEST_FILE} is an incomplete or damaged ensemble manifest - re-run "
                            f"`ksent ensemble --corpus {manifest.get('corpus', 'CORPUS')} --force`")
    rerun = f"`ksent ensemble --corpus {manifest.get('corpus')}`"
    combination = manifest.get("combination", "mean")
    if combination not in COMBINATIONS:
        raise PipelineError(f"ensemble {directory}: combination {combination!r} is unknown to this ksent (it knows "
                            f"{', '.join(COMBINATIONS)}) - re-run {rerun} or update ksent")
    bundles, notes = _members(directory, manifest, "members", "member", rerun,
                              lambda path: load_bundle(path, runtime=runtime, sleeping_threads=sleeping_threads))
    return EnsembleBundle(directory=directory, members=bundles, weights=[float(w) for w in weights],
                          manifest=manifest, notes=tuple(notes), combination=combination)


def _load_router(directory: Path, manifest: dict, runtime: str, sleeping_threads: bool) -> RouterBundle:
    """A router bundle: its gate, and its experts (single bundles or ensembles)."""
    experts, gate_file = manifest.get("experts"), manifest.get("gate")
    rerun = "`ksent router`"
    if not (isinstance(experts, list) and len(experts) >= 2
            and all(isinstance(e, dict) and is_plain_name(e.get("name")) and isinstance(e.get("bundle_sha256"), str)
                    and isinstance(e.get("domain"), str) for e in experts)
            and isinstance(gate_file, dict) and is_plain_name(gate_file.get("file"))
            and isinstance(gate_file.get("sha256"), str)):
        raise PipelineError(f"{directory / MANIFEST_FILE} is an incomplete or damaged router manifest - re-run "
                            f"{rerun} --force")
    gate_path = directory / gate_file["file"]
    if not gate_path.is_file() or sha256_file(gate_path) != gate_file["sha256"]:
        raise PipelineError(f"router {directory}: {gate_path.name} is missing or not the one it was made with - "
                            f"re-run {rerun} --force")
    gate = DomainGate.load(gate_path)
    if list(gate.domains) != [e["domain"] for e in experts]:
        raise PipelineError(f"router {directory}: its gate's corpora {', '.join(gate.domains)} are not its experts' - "
                            f"re-run {rerun} --force")
    loaded, notes = _members(directory, manifest, "experts", "expert", rerun,
                             lambda path: load_bundle(path, runtime=runtime, sleeping_threads=sleeping_threads))
    return RouterBundle(directory=directory, experts=loaded, gate=gate, manifest=manifest, notes=tuple(notes))


# how each kind of bundle is loaded (bundle.json's "kind"; a trained model's has none): one entry per kind
LOADERS: dict[str, Callable[[Path, dict, str, bool], Predictor]] = {
    "model": load_single, "ensemble": _load_ensemble, "router": _load_router}
