"""One module per stage (registered in pipeline.graph); stage modules never import each other."""
from __future__ import annotations

from collections import Counter
from pathlib import Path

from pipeline import layout
from pipeline.core.stage import Input
from pipeline.corpora import CORPORA, Format, check_utf8_share, get_corpus, pinned_check
from pipeline.corpora.readers import read_texts

ENSEMBLE_TOK = "ensemble"       # artifacts/<corpus>-ensemble/
STUDENT_SUFFIX = "-student"     # artifacts/<corpus>-<tok>-student/: the distill stage's, beside the teacher's members


def bundle_producer(directory: Path) -> str:
    """The stage that wrote a bundle folder's bundle.json: ensemble, router, distill, student or train (by its
    manifest)."""
    for stage in ("ensemble", "router", "distill", "student"):
        if (directory / f"{stage}.manifest.json").is_file():
            return stage
    return "train"


def router_experts(artifacts_dir: Path | str, data_dir: Path | str) -> dict[str, Path]:
    """The router's experts: each declared corpus with a split and trained bundles -> its bundle with the best
    validation accuracy (a bundle of several corpora, like the student stage's, is no corpus's expert)."""
    from pipeline.predict.selection import usable_bundles

    best: dict[str, tuple[float, Path]] = {}
    for corpus, val_accuracy, directory, _ in usable_bundles(artifacts_dir):
        if corpus in CORPORA and (layout.split_path(data_dir, corpus)).is_file():
            if corpus not in best or val_accuracy > best[corpus][0]:
                best[corpus] = (val_accuracy, directory)
    return {corpus: directory for corpus, (_, directory) in sorted(best.items())}


# what the distill and student stages write: a bundle as train writes it, with evaluate's files
STUDENT_OUTPUTS = ("model.keras", "model.onnx", layout.TOKENIZER_FILE, layout.BUNDLE_FILE, "history.csv", "curves.png",
                   layout.METRICS_FILE, "predictions.csv", "confusion.png")


def student_architecture(tok: str, member: Path | None, params: dict | None = None) -> dict:
    """A student's network (the MODEL_PARAMS, batch_size, embeddings): that of bundle `member` (its recorded training
    parameters; the train stage's defaults for `tok` where it records none), unless `params` (pipeline.params.DISTILL
    or STUDENT) give another network, units, batch size or learning rate."""
    from pipeline import params as defaults
    from pipeline.core.files import read_json
    from pipeline.model.training import MODEL_PARAMS

    arch = defaults.train_defaults(tok)
    if member is not None:
        try:
            recorded = read_json(member / layout.BUNDLE_FILE)["training"]["params"]
            arch.update({k: recorded[k] for k in arch if k in recorded})
        except (OSError, ValueError, KeyError, TypeError):
            pass
    if params and params["network"] != "member":
        arch.update(cell=params["network"].removeprefix("bi"), bidirectional=params["network"].startswith("bi"))
    for key in ("units", "batch_size", "learning_rate"):    # 0 (or, for distill, no such parameter): the member's
        if params and params.get(key):
            arch[key] = params[key]
    return {k: arch[k] for k in MODEL_PARAMS + ("batch_size", "embeddings")}


def write_student(out, *, corpus: str, tok: str, preprocessor, model, fitted: tuple, params: dict, seconds: float,
                  onnx: dict, threshold: dict, distillation: dict) -> dict:
    """A student's bundle.json (which names its teacher under "distillation"), history.csv and curves.png in staging
    folder `out`, as the distill and student stages write them; `fitted`: fit_student's history and epoch timer.
    Returns bundle.json's "training" entry (the epoch kept: the lowest val_loss)."""
    import numpy as np

    from pipeline.core.files import write_json
    from pipeline.model import training
    from pipeline.predict import bundle

    history, timer = fitted
    val_loss = np.asarray(history["val_loss"], dtype=float)
    best = int(np.nanargmin(val_loss)) if np.isfinite(val_loss).any() else len(val_loss) - 1
    arch = params["architecture"]
    trained = {"params": {**arch, "epochs": params["epochs"], "seed": params["seed"]},
               "epochs_run": len(history["loss"]), "best_epoch": best + 1,
               "best_val_loss": round(float(history["val_loss"][best]), 6),
               "best_val_accuracy": round(float(history["val_accuracy"][best]), 6),
               "train_seconds": round(seconds, 1)}
    manifest = bundle.write_manifest(out.dir, corpus=corpus, tok=tok, preprocessor=preprocessor,
                                     params=model.count_params(), onnx=onnx, threshold=threshold, training=trained)
    write_json(out.path(layout.BUNDLE_FILE), {**manifest, "distillation": distillation})
    training.write_history(out.path("history.csv"), history, timer.seconds, arch["learning_rate"])
    training.plot_curves(out.path("curves.png"), history, best + 1, f"{corpus} / {tok} student")
    return trained


def run_threshold(t) -> dict:
    """The threshold rule a `ksent run --threshold` gave its target (pipeline.core.stage.Target), for the ensemble and
    the student it makes too: every model of one run decides by the same rule. {} when not given."""
    rule = (t.train_params or {}).get("threshold")
    return {} if rule is None else {"threshold": rule}


def trained_bundles(corpus: str, artifacts_dir: Path | str) -> dict[str, str]:
    """Every single-model bundle of `corpus` in `artifacts_dir` (folder name -> tokenization): the train stage's,
    not the distill stage's students (which the ensemble teaches) nor ensembles or routers."""
    from pipeline.core.files import read_json

    found = {}
    for manifest_path in layout.bundle_manifests(artifacts_dir):
        try:
            manifest = read_json(manifest_path)
        except (OSError, ValueError):
            continue
        if (isinstance(manifest, dict) and manifest.get("corpus") == corpus
                and manifest.get("kind", "model") == "model" and isinstance(manifest.get("tok"), str)
                and manifest.get("tok") != ENSEMBLE_TOK and "distillation" not in manifest):
            found[manifest_path.parent.name] = manifest["tok"]
    return found


INIT_NONE, INIT_AUTO = "none", "auto"       # --init-from's words; anything else names a bundle folder
PARENT_TOKENIZER = "parent tokenizer.json"  # the pad stage's input name for the parent's vocabulary
ADAPT_PARAMS = ("init_from",)       # train parameters that matter only with a parent
NETWORK_SHAPE = ("embedding_dim", "units", "layers", "bidirectional", "cell")     # what a parent fixes


def target_parent(t) -> Path | None:
    """The bundle the network of target `t` (pipeline.core.stage.Target) starts from: its --init-from resolved."""
    from pipeline import params as defaults

    init_from = (t.train_params or {}).get("init_from") or defaults.TRAIN["init_from"]
    return init_parent(t.corpus, t.tok, init_from, t.artifacts_dir, t.data_dir)


def init_parent(corpus: str, tok: str, init_from: str, artifacts_dir: Path | str,
                data_dir: Path | str) -> Path | None:
    """The bundle a new `corpus`/`tok` network starts from (--init-from), or None (from the pretrained vectors).

    A folder: that bundle, which must be one network (not an ensemble or router) of tokenization `tok`.
    auto: among the single-network bundles of `tok` of one other corpus in `artifacts_dir` (not the student of
    several corpora, which a corpus's own bundles may come to teach), the one with the best validation accuracy of a
    corpus with more labelled train rows than `corpus` has - so a corpus never starts from a smaller one, no two
    corpora start from each other, and which parent a corpus gets does not depend on the order they were built in;
    one that reads text otherwise is passed over. ParameterError for a folder that cannot be a parent."""
    from pipeline.core.files import read_json
    from pipeline.errors import ParameterError

    if init_from == INIT_NONE:
        return None
    own = recorded_preprocessing(data_dir, corpus, tok)
    if init_from != INIT_AUTO:
        folder = Path(init_from)
        try:
            manifest = read_json(folder / layout.BUNDLE_FILE)
        except (OSError, ValueError):
            raise ParameterError(f"--init-from {init_from}: no bundle there (its bundle.json cannot be read)") from None
        problem = _parent_problem(folder, manifest, corpus, tok, own)
        if problem:
            raise ParameterError(f"--init-from {init_from}: {problem}")
        return folder
    own_rows = train_rows(data_dir, corpus)
    best: tuple[float, str, Path] | None = None
    from pipeline.predict.selection import validation_accuracy

    for path in layout.bundle_manifests(artifacts_dir):
        try:
            manifest = read_json(path)
            other = str(manifest["corpus"])
        except (OSError, ValueError, KeyError, TypeError):
            continue
        if (other == corpus or "+" in other or train_rows(data_dir, other) <= own_rows
                or _parent_problem(path.parent, manifest, corpus, tok, own)):
            continue
        candidate = (validation_accuracy(path.parent), path.parent.name, path.parent)
        if best is None or candidate[:2] > best[:2]:
            best = candidate
    return best[2] if best else None


def train_rows(data_dir: Path | str, corpus: str) -> int:
    """The corpus's labelled train rows, as its split stage counted them (0 if unknown)."""
    from pipeline.core.files import read_json

    try:
        return int(read_json(layout.interim_dir(data_dir, corpus) / "split.manifest.json")["counts"]["train"]["rows"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0


LEARNED_AS = {"cleaning": "normalizer", "segmentation": "segmenter"}     # their keys in a bundle's tokenizer.json


def recorded_preprocessing(data_dir: Path | str, corpus: str, tok: str) -> dict[str, object]:
    """How `corpus` is read for tokenization `tok`, as its clean and tokenize stages recorded it: "cleaning" (its
    normalizer.json), "segmentation" (its segmenter.json); one not made yet is left out."""
    from pipeline.core.files import read_json

    found = {}
    for what, path in (("cleaning", layout.interim_dir(data_dir, corpus) / "normalizer.json"),
                       ("segmentation", layout.processed_dir(data_dir, corpus, tok) / "segmenter.json")):
        try:
            found[what] = read_json(path)
        except (OSError, ValueError):
            continue
    return found


def _parent_problem(folder: Path, manifest, corpus: str, tok: str, own: dict[str, object]) -> str | None:
    """Why bundle `folder` (its bundle.json `manifest`) cannot start a `corpus`/`tok` network read as `own`
    (recorded_preprocessing) says: not one network, another tokenization, or another cleaning or segmentation."""
    from pipeline.core.files import read_json

    if not isinstance(manifest, dict) or manifest.get("kind", "model") != "model" or not (
            folder / "model.keras").is_file():
        return "not one network (an ensemble or a router cannot be started from; give one of its members)"
    if manifest.get("tok") != tok:
        return (f"its tokenization is {manifest.get('tok')}, this one's {tok} - a network reads only the tokens it "
                f"learned")
    try:
        learned = read_json(folder / layout.TOKENIZER_FILE)
    except (OSError, ValueError):
        return f"{folder.name} has no readable {layout.TOKENIZER_FILE}"
    for what, value in own.items():
        theirs = learned.get(LEARNED_AS[what]) if isinstance(learned, dict) else None
        if theirs != value:
            return f"{folder.name} was trained on another {what} ({theirs} against {corpus}'s {value})"
    return None


def tokenized_inputs(data_dir: Path | str, corpus: str, tok: str) -> dict[str, Input]:
    """What the stages after tokenize read: the tokens (and segmenter) of tokenization `tok`, with the
    split and the normalization they go with."""
    interim, folder, label = layout.interim_dir(data_dir, corpus), layout.processed_dir(data_dir, corpus, tok), \
        layout.label(corpus, tok)
    return {layout.TOKENS_FILE: Input(folder / layout.TOKENS_FILE, "tokenize", label=label),
            "segmenter.json": Input(folder / "segmenter.json", "tokenize", label=label),
            layout.SPLIT_FILE: Input(interim / layout.SPLIT_FILE, "split", label=corpus),
            "normalizer.json": Input(interim / "normalizer.json", "clean", label=corpus)}


def registered_unlabeled(corpus: str, data_dir: Path | str) -> Input | None:
    """The corpus's registered unlabeled file under data/raw/<corpus>/, checked against its pin; None if none."""
    spec = get_corpus(corpus).unlabeled
    if spec is None:
        return None
    return Input(layout.raw_dir(data_dir, corpus) / spec.name, "download",
                 pinned_check(corpus, spec, "the registered unlabeled file"), corpus)


class UnlabeledFilter:
    """Which unlabeled reviews pretrain and distill learn from: none empty after cleaning, none whose cleaned
    text is a validation or test review's (held-out text must not leak into training); counted by reason."""

    def __init__(self, split_rows):
        """`split_rows`: split.parquet's `text` and `split` columns."""
        self.heldout = set(split_rows.loc[split_rows["split"] != "train", "text"].fillna("").astype(str))
        self.empty = self.heldout_text = 0

    def keep(self, cleaned: str) -> bool:
        if not cleaned.strip():
            self.empty += 1
            return False
        if cleaned in self.heldout:
            self.heldout_text += 1
            return False
        return True

    def first(self, lines, normalizer, limit: int) -> list[str]:
        """The lines to learn from, in order: the first `limit` (0: all) that `keep` keeps, cleaned by `normalizer`."""
        kept = []
        for line in lines:
            if limit and len(kept) >= limit:
                break
            if self.keep(normalizer(line)):
                kept.append(line)
        return kept

    def counts(self, lines: int, problems: Counter, used: int) -> dict:
        """The stage's counts: lines read (rows not UTF-8 or without text included), what was dropped, used."""
        return {"unlabeled_lines": lines + sum(problems.values()), "invalid_utf8": problems["invalid UTF-8"],
                "empty": self.empty, "heldout_text": self.heldout_text, "unlabeled_used": used}


LINES = Format("lines")      # a file given with --unlabeled: one review a line (gzip accepted)


def read_unlabeled(path: Path, corpus: str, registered: bool) -> tuple[list[str], Counter]:
    """The texts of an unlabeled file (the corpus's registered one in its declared format, else one a line),
    and a Counter of the rows that were not UTF-8 or had no text."""
    spec = get_corpus(corpus)
    fmt, column = (spec.unlabeled_format, spec.unlabeled_text) if registered else (LINES, "text")
    texts, problems, rows = read_texts(path, fmt, column, spec)
    check_utf8_share(path, problems["invalid UTF-8"], rows)
    return texts, problems


def labels_key(teacher: Path, preprocessor, texts: list[str], *settings) -> str:
    """A digest of everything that decides a teacher's labels of `texts` and the student's ids of them: the teacher's
    bundle.json (it pins its members, experts and gate by checksum), the student's preprocessing, the library
    versions and `settings` (how the labelling is blocked and routed)."""
    import hashlib
    import json

    from pipeline.core.files import sha256_file
    from pipeline.core.stage import library_versions

    digest = hashlib.sha256(json.dumps([sha256_file(teacher), preprocessor.fingerprint(), library_versions(),
                                        [str(s) for s in settings], len(texts)]).encode())
    digest.update("\0".join(texts).encode("utf-8", "surrogatepass"))
    return digest.hexdigest()


def teacher_labels(cache: Path, keys: dict[str, str], label) -> dict:
    """Each part's (student ids, teacher probabilities): kept from the last run in `cache` where the part's key
    (labels_key) is the same - the arrays the teacher would give again, without the minutes of labelling - else
    `label(part)`; the set is then written back to `cache` (temp file, then rename) for the next run. The cache
    is no stage's output: deleting it, or a damaged one, only costs the labelling."""
    import json
    import zipfile

    import numpy as np

    from pipeline.core.files import atomic_path
    from pipeline.core.progress import Progress

    def say(text: str) -> None:
        shown = Progress()
        shown.line(text)
        shown.close()

    kept: dict = {}
    try:
        with np.load(cache, allow_pickle=False) as old:
            old_keys = json.loads(str(old["keys"]))
            kept = {p: (old[f"{p}.x"], old[f"{p}.p"]) for p, key in keys.items() if dict(old_keys).get(p) == key}
    except FileNotFoundError:
        pass
    except (OSError, ValueError, TypeError, KeyError, zipfile.BadZipFile) as exc:   # JSONDecodeError: a ValueError
        say(f"  {cache.name}: not readable ({type(exc).__name__}) - labelling again")
    result = {}
    for part in keys:
        if part in kept:
            say(f"  {part}: the teacher's labels of {len(kept[part][1]):,} reviews kept from the last run "
                 f"({cache.name}: same teacher, texts and preprocessing)")
            result[part] = kept[part]
        else:
            result[part] = label(part)
    if len(kept) < len(keys):
        arrays = {f"{part}.{kind}": a for part, (x, p) in result.items() for kind, a in (("x", x), ("p", p))}
        try:
            with atomic_path(cache) as tmp, tmp.open("wb") as f:
                np.savez_compressed(f, keys=np.array(json.dumps(keys)), **arrays)
        except OSError as exc:                  # a full disk costs the next run its labelling, not this run
            say(f"  {cache.name}: not written ({exc.strerror or exc}) - the next run labels again")
    return result
