"""Regex normalization profiles: the `clean` stage and `predict` share these.

Every profile first normalizes Unicode to NFC (text saved on macOS often holds
decomposed Hangul, which a syllable regex would silently delete), applies its own
regexes, squeezes long runs of one character (ㅋㅋㅋㅋㅋ -> ㅋㅋ, which also keeps
morpheme analyzers from stalling), collapses whitespace and strips. Normalizing
twice gives the same text as once (a property test checks it).

Removed characters become a space rather than nothing, so "좋다.최고" gives two
words instead of the run-together "좋다최고" that the tutorials' regexes produce.
"""
from __future__ import annotations

import re
import unicodedata
from dataclasses import asdict, dataclass

from pipeline.errors import PipelineError

_WHITESPACE = re.compile(r"\s+")
# Hangul compatibility jamo (ㄱ-ㅎ, ㅏ-ㅣ) and syllables (가-힣)
_NOT_HANGUL_DIGIT = re.compile(r"[^ㄱ-ㅎㅏ-ㅣ가-힣0-9 ]")
_NOT_HANGUL_LATIN = re.compile(r"[^ㄱ-ㅎㅏ-ㅣ가-힣a-z0-9(),!?' ]")
_PUNCTUATION = re.compile(r"([(),!?'])")


@dataclass(frozen=True)
class _Profile:
    lower: bool = False
    remove: re.Pattern | None = None       # characters replaced by a space
    split_punctuation: bool = False        # (),!?' become tokens of their own


PROFILES = {
    "hangul": _Profile(remove=_NOT_HANGUL_DIGIT),          # Hangul syllables and jamo, digits, spaces
    "hangul-latin": _Profile(lower=True, remove=_NOT_HANGUL_LATIN, split_punctuation=True),
    "none": _Profile(),                                     # only NFC, squeeze and whitespace
}


def squeeze_repeats(text: str, keep: int) -> str:
    """Shorten every run of one character longer than `keep` to `keep` characters."""
    if keep <= 0:
        return text
    return re.sub(r"(.)\1{%d,}" % keep, lambda m: m.group(1) * keep, text)


@dataclass(frozen=True)
class Normalizer:
    profile: str = "hangul"
    squeeze: int = 2

    def __post_init__(self):
        if self.profile not in PROFILES:
            raise PipelineError(f"unknown clean profile {self.profile!r}; "
                                f"choose one of: {', '.join(PROFILES)}")
        if self.squeeze < 0:
            raise PipelineError(f"squeeze must be >= 0 (0 = off), got {self.squeeze}")

    def __call__(self, text: str) -> str:
        profile = PROFILES[self.profile]
        text = unicodedata.normalize("NFC", text)
        if profile.lower:
            text = text.lower()
        if profile.remove is not None:
            text = profile.remove.sub(" ", text)
        # squeeze after lower-casing and removal (so the result is stable), before
        # punctuation is spaced out (so "!!!!" still shortens)
        text = squeeze_repeats(text, self.squeeze)
        if profile.split_punctuation:
            text = _PUNCTUATION.sub(r" \1 ", text)
        return _WHITESPACE.sub(" ", text).strip()

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> Normalizer:
        return cls(profile=d["profile"], squeeze=int(d["squeeze"]))
