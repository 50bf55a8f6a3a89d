"""Corpus declarations: TOML files validated against a schema, found by a documented rule.

A corpus NAME is declared in a file NAME.toml (the file's name is the corpus's name). ksent reads,
in this order, and refuses two declarations of one name:
  1. its built-in declarations (pipeline/corpora/builtin/: nsmc, naver_shopping, naver_shopping_sample);
  2. every *.toml in ./corpora/ (the folder you run ksent in);
  3. every *.toml file or folder of them listed in $KSENT_CORPORA (separated by ':').
`docs/corpora.md` documents every key; `ksent corpus show NAME` prints what a declaration resolves to.
"""
from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError, model_validator

from pipeline.corpora.spec import Corpus, CorpusFile, Format, LabelRule, RatingRule, SplitRule
from pipeline.errors import PipelineError

BUILTIN_DIR = Path(__file__).parent / "builtin"
LOCAL_DIR = "corpora"
PATH_ENV = "KSENT_CORPORA"
NAME = re.compile(r"^[a-z0-9][a-z0-9_]{0,63}$")
MAX_DECLARATION_BYTES = 1 << 20

Value = str | int | bool


def _one_or_more(value):
    """`positive = 1` means `positive = [1]`: a single value is a one-element list."""
    return value if isinstance(value, list) else [value]


Values = Annotated[list[Value], BeforeValidator(_one_or_more), Field(min_length=1)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


class FormatDecl(_Strict):
    type: Literal["csv", "tsv", "jsonl", "parquet", "lines"]
    header: bool = True
    names: list[str] | None = None
    delimiter: Annotated[str, Field(min_length=1, max_length=1)] | None = None
    quoting: Literal["csv", "none"] | None = None
    unquote: Annotated[int, Field(ge=0, le=3)] = 0
    encoding: Literal["utf-8", "utf-8-sig"] = "utf-8"
    compression: Literal["auto", "gzip", "none"] = "auto"

    @model_validator(mode="after")
    def _names_with_headerless(self):
        tabular = self.type in ("csv", "tsv")
        if tabular and not self.header and not self.names:
            raise ValueError("a file without a header needs `names`, the columns in order")
        if self.names is not None and (self.header or not tabular):
            raise ValueError("`names` is for csv/tsv files with header = false")
        if (self.delimiter or self.quoting) and not tabular:
            raise ValueError("`delimiter` and `quoting` are for csv/tsv files")
        return self


class FileDecl(_Strict):
    url: str | None = None
    path: str | None = None
    name: str | None = None
    role: Literal["train", "test", "all"] = "all"
    sha256: Annotated[str, Field(pattern=r"^[0-9a-f]{64}$")] | None = None
    git_blob_sha1: Annotated[str, Field(pattern=r"^[0-9a-f]{40}$")] | None = None
    size: Annotated[int, Field(gt=0)] | None = None
    mirror_folder: str | None = None

    @model_validator(mode="after")
    def _one_source(self):
        if self.url and self.path:
            raise ValueError("give `url` or `path`, not both")
        if self.url and not re.match(r"^(https?|file)://", self.url):
            raise ValueError(f"url must start with https://, http:// or file://, got {self.url!r}")
        if not (self.url or self.path or self.name):
            raise ValueError("a file needs `url`, `path`, or (mirror only) `name`")
        for key in ("name", "mirror_folder"):
            value = getattr(self, key)
            if value is not None and (not value or "/" in value or "\\" in value or value in (".", "..")):
                raise ValueError(f"{key} must be a plain file or folder name, got {value!r}")
        return self


class UnlabeledDecl(FileDecl):
    role: Literal["unlabeled"] = "unlabeled"
    format: FormatDecl | None = None        # default: the corpus's format
    text: str | None = None                 # default: the corpus's text column


class LabelDecl(_Strict):
    column: str
    positive: Values
    negative: Values


class RatingDecl(_Strict):
    model_config = ConfigDict(extra="forbid", strict=False)     # 4 and 4.0 alike
    column: str
    min: float
    max: float
    positive_from: float
    negative_to: float

    @model_validator(mode="before")
    @classmethod
    def _numbers(cls, data):
        for key, value in (data.items() if isinstance(data, dict) else ()):
            if key == "column":
                continue
            if isinstance(value, bool):                  # TOML's true is not the rating 1
                raise ValueError(f"{key} must be a number, got {str(value).lower()}")
            if isinstance(value, str):                   # nor is the text "1": a quoted number is a typo to show
                raise ValueError(f"{key} must be a number, got the string {value!r} (write it without quotes)")
        return data

    @model_validator(mode="after")
    def _ordered(self):
        if not self.min <= self.negative_to < self.positive_from <= self.max:
            raise ValueError("need min <= negative_to < positive_from <= max")
        return self


class SplitDecl(_Strict):
    model_config = ConfigDict(extra="forbid", strict=False)
    column: str | None = None
    values: dict[str, Literal["train", "val", "test"]] | None = None
    seed: Annotated[int, Field(ge=0, le=2**32 - 1)] | None = None
    val_ratio: Annotated[float, Field(gt=0, lt=1)] | None = None
    test_ratio: Annotated[float, Field(gt=0, lt=1)] | None = None

    @model_validator(mode="after")
    def _column_and_values(self):
        if bool(self.column) != bool(self.values):
            raise ValueError("a split column needs `values` (its value -> train, val or test), and values a column")
        return self


class CleanDecl(_Strict):
    """The clean stage's parameters for this corpus (pipeline.params.CLEAN checks their values)."""
    model_config = ConfigDict(extra="forbid", strict=False)
    profile: str | None = None
    squeeze: int | None = None
    drop_empty_test: bool | None = None


class Declaration(_Strict):
    description: str = ""
    files: Annotated[list[FileDecl], Field(min_length=1)]
    format: FormatDecl
    text: str
    id: str | None = None
    label: LabelDecl | None = None
    rating: RatingDecl | None = None
    split: SplitDecl = SplitDecl()
    clean: CleanDecl = CleanDecl()
    unlabeled: UnlabeledDecl | None = None
    extra_domain: bool = False

    @model_validator(mode="after")
    def _consistent(self):
        if (self.label is None) == (self.rating is None):
            raise ValueError("declare the label either as [label] (a label column) or as [rating] (a rating rule)")
        if self.split.column and any(f.role != "all" for f in self.files):
            raise ValueError("with a split column every file's role is \"all\"")
        names = [_file_name(f) for f in self.files]
        if len(set(names)) != len(names):
            raise ValueError(f"two files of one name: {', '.join(names)}")
        return self


def _file_name(f: FileDecl) -> str:
    return f.name or (f.url or f.path or "").rstrip("/").rsplit("/", 1)[-1]


def _format(decl: FormatDecl) -> Format:
    tabular = decl.type in ("csv", "tsv")
    quoting = decl.quoting or ("csv" if decl.type == "csv" else "none")
    return Format(kind=decl.type, header=decl.header if tabular else False, names=tuple(decl.names or ()),
                  delimiter=decl.delimiter or ("\t" if decl.type == "tsv" else ","),
                  quoting=tabular and quoting == "csv", unquote=decl.unquote, compression=decl.compression)


def _file(f: FileDecl, folder: Path, source: str) -> CorpusFile:
    url = f.url or ""
    if f.path:
        url = (folder / Path(f.path).expanduser()).resolve().as_uri()
    return CorpusFile(_file_name(f), url, source, sha256=f.sha256, git_blob_sha1=f.git_blob_sha1,
                      mirror_folder=f.mirror_folder, size=f.size)


def _message(exc: ValidationError) -> str:
    error = exc.errors(include_url=False)[0]
    loc = [str(part) for part in error["loc"]]
    if error["type"] == "extra_forbidden":
        where = f" in [{'.'.join(loc[:-1])}]" if loc[:-1] else ""
        return f"unknown key {loc[-1]!r}{where}"
    if error["type"] == "missing":
        return f"missing key {'.'.join(loc)!r}"
    key = ".".join(loc)
    return f"{key}: {error['msg'].removeprefix('Value error, ')}" if key else error["msg"].removeprefix(
        "Value error, ")


def parse_declaration(name: str, text: str, origin: Path) -> Corpus:
    """The Corpus declared by TOML `text` (from file `origin`); PipelineError naming the file and key."""
    try:
        import tomllib
    except ModuleNotFoundError:         # Python 3.10
        import tomli as tomllib

    if not NAME.match(name):
        raise PipelineError(f"{origin}: corpus names are lower-case letters, digits and '_' (the file's name "
                            f"without .toml), got {name!r}")
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PipelineError(f"{origin}: not valid TOML: {exc}") from None
    try:
        decl = Declaration.model_validate(data)
    except ValidationError as exc:
        raise PipelineError(f"{origin}: {_message(exc)}") from None
    folder = origin.parent
    rule: LabelRule | RatingRule
    if decl.label:
        rule = LabelRule(decl.label.column, tuple(decl.label.positive), tuple(decl.label.negative))
        if set(rule.positive) & set(rule.negative):
            raise PipelineError(f"{origin}: label: a value is both positive and negative")
    else:
        r = decl.rating
        rule = RatingRule(r.column, r.min, r.max, r.positive_from, r.negative_to)
    split_defaults = _stage_defaults(origin, "split", decl.split, ("seed", "val_ratio", "test_ratio"))
    clean_defaults = _stage_defaults(origin, "clean", decl.clean, ("profile", "squeeze", "drop_empty_test"))
    split = SplitRule(decl.split.column, tuple((str(k).strip().lower(), v) for k, v in (decl.split.values or {})
                                               .items()), split_defaults)
    unlabeled = unlabeled_format = None
    if decl.unlabeled:
        unlabeled = _file(decl.unlabeled, folder, "unlabeled")
        unlabeled_format = _format(decl.unlabeled.format or decl.format)
    return Corpus(name=name, description=decl.description, files=tuple(_file(f, folder, f.role) for f in decl.files),
                  format=_format(decl.format), text=decl.text, label=rule, id=decl.id, split=split,
                  unlabeled=unlabeled, unlabeled_format=unlabeled_format,
                  unlabeled_text=(decl.unlabeled.text if decl.unlabeled else None) or decl.text,
                  clean=clean_defaults, extra_domain=decl.extra_domain, origin=str(origin))


def _stage_defaults(origin: Path, stage: str, section, keys: tuple[str, ...]) -> tuple[tuple[str, object], ...]:
    """The stage parameters a declaration's [split] or [clean] sets, checked as the stage checks them (with the
    stage's defaults for the others: the ratios together must leave training rows)."""
    from pipeline import params as defaults
    from pipeline.errors import ParameterError

    given = {k: getattr(section, k) for k in keys if getattr(section, k) is not None}
    group = getattr(defaults, stage.upper())
    try:
        resolved = group.resolve(given, prefix=f"[{stage}] ")
    except ParameterError as exc:
        raise PipelineError(f"{origin}: {exc}") from None
    if stage == "split" and resolved["val_ratio"] + resolved["test_ratio"] >= 1:
        raise PipelineError(f"{origin}: [split] val_ratio + test_ratio must be below 1 (rows are left to train "
                            f"on), got {resolved['val_ratio']} + {resolved['test_ratio']}"
                            + ("" if {"val_ratio", "test_ratio"} <= set(given) else
                               " (the split stage's default for the one not declared)"))
    return tuple((k, resolved[k]) for k in keys if k in given)


def read_declaration(path: Path) -> Corpus:
    try:
        with open(path, "rb") as fh:
            data = fh.read(MAX_DECLARATION_BYTES + 1)
    except OSError as exc:
        raise PipelineError(f"cannot read corpus declaration {path}: {exc.strerror or exc}") from None
    if len(data) > MAX_DECLARATION_BYTES:
        raise PipelineError(f"{path} is larger than 1 MB: not a corpus declaration")
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise PipelineError(f"{path} is not UTF-8 text") from None
    return parse_declaration(path.stem, text, path)


def search_path() -> list[Path]:
    """The declaration files in the documented order (built-ins, ./corpora/, $KSENT_CORPORA)."""
    found = sorted(BUILTIN_DIR.glob("*.toml"))
    local = Path(LOCAL_DIR)
    if local.is_dir():
        found += sorted(local.glob("*.toml"))
    for entry in filter(None, os.environ.get(PATH_ENV, "").split(os.pathsep)):
        path = Path(entry).expanduser()
        if path.is_dir():
            found += sorted(path.glob("*.toml"))
        elif path.is_file():
            found.append(path)
        else:
            raise PipelineError(f"{PATH_ENV} names {entry}, which is neither a .toml file nor a folder")
    return found


def discover() -> dict[str, Corpus]:
    corpora: dict[str, Corpus] = {}
    seen: set[Path] = set()
    for path in search_path():
        if path.resolve() in seen:              # ./corpora also listed in $KSENT_CORPORA: one file, read once
            continue
        seen.add(path.resolve())
        corpus = read_declaration(path)
        if corpus.name in corpora:
            raise PipelineError(f"two declarations of corpus {corpus.name!r}: {corpora[corpus.name].origin} and "
                                f"{path} - rename one file")
        corpora[corpus.name] = corpus
    return corpora
