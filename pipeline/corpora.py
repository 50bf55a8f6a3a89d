"""The corpus registry: name -> upstream files, URLs, pinned checksums and a reader.

Every reader returns the common table schema

    id (str) | text (str) | label (int8: 1 = positive) | rating (Int8, <NA> if none) | source (str)

where `source` names the upstream file's role ("train", "test", or "all" for a
corpus without an upstream split), plus a Counter of malformed rows by reason.
Readers never drop or merge a row silently: every line is either a row or a
counted problem.
"""
from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import pandas as pd


COLUMNS = ["id", "text", "label", "rating", "source"]


@dataclass(frozen=True)
class CorpusFile:
    name: str                      # upstream file name (also the name under data/raw/<corpus>/)
    url: str                       # upstream URL
    source: str                    # "train", "test" or "all"
    sha256: str | None = None      # pinned SHA-256 of the content, or
    git_blob_sha1: str | None = None  # upstream git blob id: sha1(b"blob <size>\0" + content)
    mirror_folder: str | None = None  # folder of a mirror holding it, if not the corpus's name
    size: int | None = None        # bytes, where known: a download that runs longer stops at once

    def checksum_kind(self) -> str:
        return "sha256" if self.sha256 else "git-blob-sha1"

    def expected_checksum(self) -> str:
        return self.sha256 or self.git_blob_sha1  # type: ignore[return-value]


@dataclass(frozen=True)
class Corpus:
    name: str
    description: str
    files: tuple[CorpusFile, ...]
    parse_line: Callable[[str], tuple[str | None, str, int, int | None] | str]
    has_header: bool
    # Unlabeled in-domain reviews for pretraining (UTF-8, one per line, may be gzipped), if any.
    # The download stage fetches it like the other files when it has a source (url or mirror).
    unlabeled: CorpusFile | None = None

    def read(self, raw_dir: Path | str) -> tuple[pd.DataFrame, Counter]:
        """Read every upstream file under `raw_dir` into one table in the common schema."""
        import pandas as pd  # here, not at module level: the CLI imports the registry, and predict needs no pandas

        frames, problems = [], Counter()
        for f in self.files:
            frame, bad = _read_lines(Path(raw_dir) / f.name, self, f.source)
            frames.append(frame)
            problems.update(bad)
        return pd.concat(frames, ignore_index=True), problems


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


def verify_file(path: Path | str, spec: CorpusFile) -> tuple[bool, str]:
    """Return (matches, actual checksum) of a local file against its pinned checksum."""
    actual = file_checksum(path, spec.checksum_kind())
    return actual == spec.expected_checksum(), actual


def pinned_check(corpus: str, spec: CorpusFile, what: str = "the upstream file") -> Callable[[Path], None]:
    """A check (for a stage Input) that a downloaded file is still the verified one, not edited since."""
    def check(path: Path) -> None:
        ok, actual = verify_file(path, spec)
        if not ok:
            from pipeline.errors import PipelineError
            raise PipelineError(f"{path} is not {what} ({spec.checksum_kind()} {actual[:12]}..., pinned "
                                f"{spec.expected_checksum()[:12]}...): it changed after download - re-run "
                                f"`ksent download --corpus {corpus} --force`")
    return check


def check_utf8_share(path: Path | str, invalid: int, lines: int) -> None:
    """PipelineError if more than ENCODING_FAILURE_SHARE of a file's lines were not UTF-8 (another encoding)."""
    if invalid > max(1, ENCODING_FAILURE_SHARE * lines):
        from pipeline.errors import PipelineError
        raise PipelineError(f"{path} is not UTF-8 ({invalid:,} of {lines:,} lines are not valid UTF-8; Korean "
                            f"text in CP949/EUC-KR looks like this) - convert it, e.g. `iconv -f CP949 -t UTF-8`, "
                            f"or fetch the file again")


# --- line parsers: return (id, text, label, rating) or a problem reason -------------------

def unquote_csv_field(field: str, layers: int = 1) -> str:
    """Undo up to `layers` layers of CSV quoting (a field `"x ""y"" z"` reads as `x "y" z`).

    NSMC's documents that contain a quote were CSV-quoted twice upstream (all 856 of
    them unquote cleanly exactly twice; 31 still start and end with a quote after
    that, because the review itself did). Read naively (QUOTE_NONE) the quote
    marks stay in the text; read with a CSV parser a stray quote merges rows. We
    split on tabs, so no row can merge, and unquote well-formed quoted fields here.
    """
    for _ in range(layers):
        if not (len(field) >= 2 and field[0] == '"' and field[-1] == '"'):
            break
        inner = field[1:-1]
        if '"' in inner.replace('""', ""):
            break
        field = inner.replace('""', '"')
    return field


def _parse_nsmc(line: str):
    fields = line.split("\t")
    if len(fields) != 3:
        return "wrong field count"
    doc_id, text, label = fields
    if not doc_id:
        return "missing id"
    if label not in ("0", "1"):
        return "bad label"
    return doc_id, unquote_csv_field(text, layers=2), int(label), None


def _parse_shopping(line: str):
    fields = line.split("\t")
    if len(fields) != 2:
        return "wrong field count"
    rating, text = fields
    if not rating.strip().isdigit():
        return "non-numeric rating"
    value = int(rating)
    if not 1 <= value <= 5:
        return "rating out of range"
    return None, text, int(value > 3), value


ENCODING_FAILURE_SHARE = 0.1   # more invalid UTF-8 lines than this: the file is in another encoding


def _read_lines(path: Path, corpus: Corpus, source: str) -> tuple[pd.DataFrame, Counter]:
    """Parse one upstream file; a line that is not valid UTF-8 is dropped and counted once."""
    with open(path, "rb") as fh:                   # lines end at b"\n" only, as upstream writes them
        frame, problems, lines = parse_lines(fh, 1, corpus, source)
    check_utf8_share(path, problems["invalid UTF-8"], lines)
    return frame, problems


def parse_lines(lines: Iterable[bytes], first_lineno: int, corpus: Corpus,
                source: str) -> tuple[pd.DataFrame, Counter, int]:
    """Parse upstream lines (bytes, the first one numbered `first_lineno`) into the common schema.

    Returns (rows, problems by reason, number of lines); a line that is not valid UTF-8 is
    dropped and counted. A row without an id gets its line number as id.
    """
    import pandas as pd

    ids, texts, labels, ratings = [], [], [], []
    problems: Counter = Counter()
    n = 0
    for lineno, raw in enumerate(lines, start=first_lineno):
        n += 1
        if lineno == 1 and corpus.has_header:
            continue
        try:
            line = raw.decode("utf-8").rstrip("\r\n")
        except UnicodeDecodeError:
            problems["invalid UTF-8"] += 1
            continue
        parsed = corpus.parse_line(line)
        if isinstance(parsed, str):
            problems[parsed] += 1
            continue
        doc_id, text, label, rating = parsed
        ids.append(doc_id if doc_id is not None else str(lineno))
        texts.append(text)
        labels.append(label)
        ratings.append(rating)
    frame = pd.DataFrame({
        "id": pd.Series(ids, dtype="string"),
        "text": pd.Series(texts, dtype="string"),
        "label": pd.Series(labels, dtype="int8"),
        "rating": pd.Series(ratings, dtype="Int8"),
        "source": pd.Series([source] * len(ids), dtype="string"),
    })
    return frame, problems, n


def line_blocks(path: Path | str, block_bytes: int) -> list[tuple[int, int, int]]:
    """(start byte, end byte, number of the first line) of consecutive blocks of whole lines,
    each about `block_bytes` long: the partitions in which the clean stage parses a file."""
    size = Path(path).stat().st_size
    blocks, start, first_line = [], 0, 1
    with open(path, "rb") as fh:
        while start < size:
            if start + block_bytes >= size:
                end = size
            else:
                fh.seek(start + block_bytes)
                fh.readline()                       # to the end of the line the target falls in
                end = fh.tell()
            fh.seek(start)
            newlines, left = 0, end - start
            while left:
                chunk = fh.read(min(left, 1 << 20))
                newlines += chunk.count(b"\n")
                left -= len(chunk)
            blocks.append((start, end, first_line))
            first_line += newlines
            start = end
    return blocks


def read_block(path: Path | str, start: int, end: int) -> list[bytes]:
    """The lines of bytes [start, end) of a file, as iterating over the open file yields them."""
    import io

    with open(path, "rb") as fh:
        fh.seek(start)
        return list(io.BytesIO(fh.read(end - start)))


_NSMC_BASE = "https://raw.githubusercontent.com/e9t/nsmc/master"
_SHOPPING_BASE = "https://raw.githubusercontent.com/bab2min/corpus/master/sentiment"

CORPORA: dict[str, Corpus] = {
    "nsmc": Corpus(
        name="nsmc",
        description="Naver sentiment movie corpus v1.0 (e9t/nsmc): 150,000 train + 50,000 test reviews",
        files=(
            CorpusFile("ratings_train.txt", f"{_NSMC_BASE}/ratings_train.txt", "train",
                       sha256="e03b7d14e9e41be8d464a28057cd25d7396c53e67aa7fd5f7e552c59b0ee2940", size=14_628_807),
            CorpusFile("ratings_test.txt", f"{_NSMC_BASE}/ratings_test.txt", "test",
                       sha256="8ac9f64052f11dbf6ae0acb5e038f03d90a76f0eda7820cfb3a92d02edfcebda", size=4_893_335),
        ),
        parse_line=_parse_nsmc,
        has_header=True,
        # 492,393 reviews from the crawl NSMC was sampled from, minus NSMC's own reviews (by id).
        # No upstream URL: only the project's mirror (../shared/corpora/nsmc_unlabeled/) has it.
        unlabeled=CorpusFile("reviews.txt.gz", "", "unlabeled", mirror_folder="nsmc_unlabeled",
                             sha256="0945fb1ce50e220adb64db9df6cd4b14751a20f7b39b3eecd75cef4b87a4ff75",
                             size=17_117_028),
    ),
    "naver_shopping": Corpus(
        name="naver_shopping",
        description="Naver shopping reviews (bab2min/corpus): 200,000 rated reviews, no upstream split",
        files=(
            CorpusFile("naver_shopping.txt", f"{_SHOPPING_BASE}/naver_shopping.txt", "all",
                       git_blob_sha1="25afff322fd86ee54d7813acedafe4990d83b18c"),
        ),
        parse_line=_parse_shopping,
        has_header=False,
    ),
}


def get_corpus(name: str) -> Corpus:
    from pipeline.errors import PipelineError
    try:
        return CORPORA[name]
    except KeyError:
        raise PipelineError(f"unknown corpus {name!r}; known corpora: {', '.join(CORPORA)}") from None
