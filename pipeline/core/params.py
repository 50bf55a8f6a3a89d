"""A parameter declared once: default, kind, range, choices and help.

A stage's `Params` is the one source its function validates against (`resolve`), the CLI
generates its options from (pipeline.apps.cli.param_options, `--help` showing the
defaults) and its manifest records (the resolved values). Read like a dict of defaults:
`TRAIN["units"]`.
"""
from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from pipeline.errors import ParameterError, check_number


@dataclass(frozen=True)
class Param:
    default: Any
    help: str = ""
    low: float | None = None            # inclusive unless low_open
    high: float | None = None           # inclusive unless high_open
    low_open: bool = False
    high_open: bool = False
    choices: tuple | None = None
    flag: str | None = None             # the CLI declaration when not --<name> (e.g. "--x/--no-x")
    # A rule beyond range and choices: value -> message ("must be ...") or None; and, for a value
    # given on the command line as text, its parser (raising ValueError with what is accepted).
    rule: Callable[[Any], str | None] | None = None
    parse: Callable[[str], Any] | None = None

    @property
    def integer(self) -> bool:
        return isinstance(self.default, int) and not isinstance(self.default, bool)

    def check(self, name: str, value: Any) -> Any:
        """`value` checked against the declaration (an integral float becomes an int), else ParameterError."""
        if self.choices is not None:
            if value not in self.choices:
                raise ParameterError(f"{name} must be one of {', '.join(map(str, self.choices))}, got {value!r}")
        elif isinstance(self.default, bool):
            if not isinstance(value, bool):
                raise ParameterError(f"{name} must be true or false, got {value!r}")
        elif self.low is not None or self.high is not None:
            if self.integer and isinstance(value, float) and value.is_integer():
                value = int(value)                      # 3.0 epochs is 3 epochs
            check_number(name, value, -math.inf if self.low is None else self.low,
                         math.inf if self.high is None else self.high, integer=self.integer,
                         low_open=self.low_open, high_open=self.high_open)
        if self.rule is not None:
            problem = self.rule(value)
            if problem:
                raise ParameterError(f"{name} {problem}, got {value!r}")
        return value


class Params(Mapping):
    """A stage's parameters in declaration order; maps each name to its default."""

    def __init__(self, stage: str, **params: Param):
        self.stage = stage
        self.params = params

    def __getitem__(self, name: str) -> Any:
        return self.params[name].default

    def __iter__(self) -> Iterator[str]:
        return iter(self.params)

    def __len__(self) -> int:
        return len(self.params)

    def resolve(self, given: Mapping[str, Any], defaults: Mapping[str, Any] | None = None,
                prefix: str = "") -> dict:
        """The defaults (`defaults`, else the declared ones) overridden by `given` (None: the default),
        each checked; ParameterError for an unknown name or a bad value. `prefix` starts each message."""
        unknown = sorted(set(given) - set(self.params))
        if unknown:
            raise ParameterError(f"{self.stage}: unknown parameter(s) {', '.join(unknown)}; known: "
                                 f"{', '.join(self.params)}")
        values = {**dict(defaults or self), **{k: v for k, v in given.items() if v is not None}}
        return {name: param.check(f"{prefix}{name}", values[name]) for name, param in self.params.items()}
