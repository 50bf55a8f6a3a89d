"""What a corpus is once its declaration is read: files, format, columns, label rule, split.

Plain frozen dataclasses (picklable, so the engine's workers get them with each partition);
pipeline.corpora.declaration builds them from TOML, pipeline.corpora.readers reads files with them.
"""
from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pipeline.errors import PipelineError

ENCODING_FAILURE_SHARE = 0.1   # more invalid UTF-8 rows than this: the file is in another encoding


@dataclass(frozen=True)
class CorpusFile:
    name: str                      # file name under data/raw/<corpus>/ (and in a mirror's folder)
    url: str                       # https://, http:// or file:// URL; "" = only in a mirror
    source: str                    # role: "train", "test" or "all" (split later), "unlabeled"
    sha256: str | None = None      # pinned SHA-256 of the content, or
    git_blob_sha1: str | None = None  # upstream git blob id: sha1(b"blob <size>\0" + content), or neither:
    mirror_folder: str | None = None  # the checksum recorded at first download is enforced after
    size: int | None = None        # bytes, where known: a download that runs longer stops at once

    @property
    def pinned(self) -> bool:
        return bool(self.sha256 or self.git_blob_sha1)

    @property
    def local_path(self) -> Path | None:
        """The file a `file://` URL (a declared `path`) names: read where it is, never from a mirror; None for
        a remote or mirror-only file."""
        if not self.url.startswith("file://"):
            return None
        from urllib.parse import unquote, urlparse

        return Path(unquote(urlparse(self.url).path))

    def checksum_kind(self) -> str:
        return "git-blob-sha1" if self.git_blob_sha1 and not self.sha256 else "sha256"

    def expected_checksum(self) -> str | None:
        return self.sha256 or self.git_blob_sha1


@dataclass(frozen=True)
class Format:
    """How a file's rows are written. `kind`: tsv, csv, jsonl, parquet, or lines (one text a line)."""
    kind: str
    header: bool = True                    # csv/tsv: the first row names the columns
    names: tuple[str, ...] = ()            # csv/tsv without a header: the columns' names, in order
    delimiter: str = ","
    quoting: bool = True                   # csv/tsv: RFC 4180 double quotes (commas, quotes, newlines inside)
    unquote: int = 0                       # further layers of CSV quoting inside the text field (NSMC)
    compression: str = "auto"              # auto (by the .gz suffix or gzip magic), gzip, none

    @property
    def line_based(self) -> bool:
        """Whether a row never spans lines, so that a file can be cut at any newline."""
        return self.kind in ("jsonl", "lines") or (self.kind in ("tsv", "csv") and not self.quoting)


def _canonical(value) -> str:
    """A label value as compared with a declaration's: 1, "1", " 1 " and 1.0 alike; True and "true" alike."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value).strip().lower()


@dataclass(frozen=True)
class LabelRule:
    """A label column whose values map to negative / positive."""
    column: str
    positive: tuple[str, ...]
    negative: tuple[str, ...]

    def __post_init__(self):
        object.__setattr__(self, "positive", tuple(_canonical(v) for v in self.positive))
        object.__setattr__(self, "negative", tuple(_canonical(v) for v in self.negative))

    def label(self, value) -> tuple[int, int | None] | str:
        key = _canonical(value) if value is not None else ""
        if key in self.positive:
            return 1, None
        if key in self.negative:
            return 0, None
        return "unmapped label"


@dataclass(frozen=True)
class RatingRule:
    """A rating column: positive at or above `positive_from`, negative at or below `negative_to`, between
    them neutral (dropped and counted); outside [low, high] counted as out of range."""
    column: str
    low: float
    high: float
    positive_from: float
    negative_to: float

    def label(self, value) -> tuple[int, int | None] | str:
        if isinstance(value, bool):
            return "non-numeric rating"
        try:
            rating = float(value if not isinstance(value, str) else value.strip())
        except (TypeError, ValueError):
            return "non-numeric rating"
        if not math.isfinite(rating):
            return "non-numeric rating"
        if not self.low <= rating <= self.high:
            return "rating out of range"
        if not rating.is_integer():
            return "non-integer rating"
        if rating >= self.positive_from:
            return 1, int(rating)
        if rating <= self.negative_to:
            return 0, int(rating)
        return "neutral rating"


@dataclass(frozen=True)
class SplitRule:
    """Which rows are test / validation: the files' roles, a split column, and the split stage's defaults."""
    column: str | None = None
    values: tuple[tuple[str, str], ...] = ()       # split column value -> train / val / test
    defaults: tuple[tuple[str, object], ...] = ()  # seed / val_ratio / test_ratio for the split stage

    def source(self, value) -> str | None:
        key = _canonical(value) if value is not None else ""
        return dict(self.values).get(key)


def split_problem(labels_by_source: dict[str, dict[int, int]], val_ratio: float, test_ratio: float) -> str | None:
    """Why these ratios would leave a split empty or without both labels (the split stage refuses them),
    from the usable rows' label counts by source (train/all, val, test); None if they are fine."""
    pool = {label: n for source, counts in labels_by_source.items() if source not in ("test", "val")
            for label, n in counts.items() if n}
    rows = sum(pool.values())
    shares = {}
    if not labels_by_source.get("val"):
        shares["validation"] = val_ratio
    if not labels_by_source.get("test"):
        shares["test"] = test_ratio
    for name, share in shares.items():
        taken = math.ceil(share * rows)
        if taken < 2 or rows - taken < 2 or len(pool) < 2 or min(pool.values()) < 2:
            return (f"{name} share {share} of {rows:,} rows gives {taken} row(s); each split needs rows of both "
                    f"labels - choose a larger ratio or more data")
    return None


@dataclass(frozen=True)
class Corpus:
    name: str
    description: str
    files: tuple[CorpusFile, ...]
    format: Format
    text: str                                  # the text column
    label: LabelRule | RatingRule
    id: str | None = None                      # the id column; none: the row's line (or row) number
    split: SplitRule = field(default_factory=SplitRule)
    # Unlabeled in-domain reviews for pretraining, if any, in `unlabeled_format`, text column `unlabeled_text`.
    # The download stage fetches it like the other files when it has a source (url or mirror).
    unlabeled: CorpusFile | None = None
    unlabeled_format: Format | None = None
    unlabeled_text: str = "text"
    clean: tuple[tuple[str, object], ...] = ()  # the clean stage's parameters as declared ([clean])
    extra_domain: bool = False                 # scored as a domain by every model, outside the default's choice
    origin: str = ""                           # the declaration file

    def declared(self, stage: str) -> dict:
        """The parts of the declaration that stage `stage` reads, resolved and keyed by their TOML names: a
        stage records them as a parameter, so an edit that changes what it reads re-runs it (and only
        such an edit: `description`, comments and key order are not here). [split] ratios and [clean] set
        the split and clean stages' parameters themselves (defaults the command line may override)."""
        parts: dict = {}
        if stage == "download":
            parts["[[files]]"] = [_source(f) for f in self.files]
            if self.unlabeled:
                parts["[unlabeled]"] = _source(self.unlabeled)
        elif stage == "clean":
            parts.update({"text": self.text, "id": self.id, "[format]": _plain(self.format),
                          "[[files]]": [{"name": f.name, "role": f.source} for f in self.files]})
            rule = self.label
            if isinstance(rule, LabelRule):
                parts["[label]"] = {"column": rule.column, "positive": sorted(rule.positive),
                                    "negative": sorted(rule.negative)}
            else:
                parts["[rating]"] = _plain(rule)
            if self.split.column:
                parts["[split]"] = {"column": self.split.column, "values": dict(sorted(self.split.values))}
        elif stage in ("pretrain", "distill"):
            if self.unlabeled:
                parts["[unlabeled]"] = {"text": self.unlabeled_text, "format": _plain(self.unlabeled_format)}
        return parts

    @property
    def downloads(self) -> tuple[CorpusFile, ...]:
        """Every file the download stage fetches: the labelled ones, then the unlabeled one if declared."""
        return (*self.files, *((self.unlabeled,) if self.unlabeled else ()))

    @property
    def columns(self) -> tuple[str, ...]:
        """The columns this corpus reads."""
        wanted = [self.text, self.label.column]
        if self.id:
            wanted.append(self.id)
        if self.split.column:
            wanted.append(self.split.column)
        return tuple(dict.fromkeys(wanted))


def _plain(obj) -> dict:
    """A frozen dataclass as JSON-ready values (tuples as lists)."""
    import json
    from dataclasses import asdict

    return json.loads(json.dumps(asdict(obj)))


def _source(f: CorpusFile) -> dict:
    """What the download stage fetches for a declared file: where from, and what it must be."""
    return {"name": f.name, "url": f.url, "checksum": f"{f.checksum_kind()}:{f.expected_checksum() or 'recorded'}",
            "size": f.size, "mirror_folder": f.mirror_folder}


# --- checksums --------------------------------------------------------------------------------

def git_blob_sha1(path: Path | str) -> str:
    path = Path(path)
    h = hashlib.sha1(f"blob {path.stat().st_size}\0".encode())
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def file_checksum(path: Path | str, kind: str) -> str:
    if kind == "sha256":
        from pipeline.core.files import sha256_file
        return sha256_file(path)
    return git_blob_sha1(path)


def verify_file(path: Path | str, spec: CorpusFile, recorded: str | None = None) -> tuple[bool, str]:
    """(matches, actual checksum) of a local file against its pinned checksum, else the `recorded` one
    (an unpinned file with nothing recorded matches)."""
    actual = file_checksum(path, spec.checksum_kind())
    expected = spec.expected_checksum() or recorded
    return expected is None or actual == expected, actual


def pinned_check(corpus: str, spec: CorpusFile, what: str = "the upstream file") -> Callable[[Path], None]:
    """A check (for a stage Input) that a downloaded file is still the verified one, not edited since."""
    def check(path: Path) -> None:
        recorded = None if spec.pinned else recorded_checksum(path.parent, spec.name)
        ok, actual = verify_file(path, spec, recorded)
        if not ok:
            expected = spec.expected_checksum() or recorded
            raise PipelineError(f"{path} is not {what} ({spec.checksum_kind()} {actual[:12]}..., "
                                f"{'pinned' if spec.pinned else 'recorded at download'} {expected[:12]}...): it "
                                f"changed after download - re-run `ksent download --corpus {corpus} --force`")
    return check


RECORDED = "checksums.json"     # in data/raw/<corpus>/: the checksums of unpinned files at first download


def recorded_checksum(raw_dir: Path | str, name: str) -> str | None:
    """The checksum recorded for file `name` at its first download; None if none was recorded. PipelineError
    for a checksums.json that is damaged or unreadable: a record that cannot be read fails closed (it would
    otherwise switch the check of an unpinned file off)."""
    import json

    path = Path(raw_dir) / RECORDED
    if not path.exists():
        return None
    try:
        recorded = json.loads(path.read_text(encoding="utf-8"))
        value = recorded.get(name)
        if value is not None and not (isinstance(value, str) and len(value) in (40, 64)):
            raise ValueError(name)
    except (OSError, ValueError, AttributeError, UnicodeDecodeError):
        raise PipelineError(f"{path} is damaged or unreadable, so the downloaded files it vouches for cannot be "
                            f"checked - fetch them again: `ksent download --corpus {Path(raw_dir).name} --force`"
                            ) from None
    return value


def check_utf8_share(path: Path | str, invalid: int, lines: int) -> None:
    """PipelineError if more than ENCODING_FAILURE_SHARE of a file's rows were not UTF-8 (another encoding)."""
    if invalid > max(1, ENCODING_FAILURE_SHARE * lines):
        raise PipelineError(f"{path} is not UTF-8 ({invalid:,} of {lines:,} lines are not valid UTF-8; "
                            f"{encoding_hint(path)}), or fetch the file again")


def encoding_hint(path: Path | str) -> str:
    """What a file that is not UTF-8 most likely is, and how to convert it: UTF-16 (a byte-order mark, or zero
    bytes between ASCII ones), a compressed file declared uncompressed, else CP949/EUC-KR."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        head = b""
    if head[:2] in (b"\xff\xfe", b"\xfe\xff") or (head and head.count(b"\0") > len(head) // 4):
        return "it looks like UTF-16 - convert it, e.g. `iconv -f UTF-16 -t UTF-8`"
    if head[:2] == b"\x1f\x8b":
        return ("it is gzip-compressed but declared `compression = \"none\"` - declare `compression = \"auto\"` "
                "or \"gzip\"")
    return "Korean text in CP949/EUC-KR looks like this - convert it, e.g. `iconv -f CP949 -t UTF-8`"
