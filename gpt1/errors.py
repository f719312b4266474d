"""Errors caused by the user's input: the CLI prints them on one line and exits with code 2."""

from __future__ import annotations

import dataclasses
import math


class UserError(Exception):
    """Bad input (a file, an option, a checkpoint) that the user can fix; the message names the file."""


class ReportedElsewhere(UserError):
    """Under torchrun: another process met a UserError and printed it; this one stops without repeating it."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM turned into the same unwinding as Ctrl-C, so that temporary files are removed on the way out."""

    def __init__(self, signum: int):
        super().__init__(signum)
        self.signum = signum


_TYPES = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "dict": (dict,)}
_TYPE_WORDS = {"int": "an integer", "float": "a number", "str": "text", "bool": "true or false", "dict": "a table"}


def check_settings(settings, *, positive=(), non_negative=(), below_one=(), choices=None) -> None:
    """A UserError naming the first setting of the dataclass `settings` whose value has the wrong type (a
    recipe's "eight" for an integer) or lies outside its range: `positive` > 0, `non_negative` >= 0, `below_one`
    in [0, 1), `choices` {name: allowed values}. Settings are named as in recipes and as their options."""
    for f in dataclasses.fields(settings):
        value, kinds = getattr(settings, f.name), _TYPES.get(str(f.type))
        if kinds and (not isinstance(value, kinds) or (isinstance(value, bool) and bool not in kinds)):
            name = f"[{f.name}]" if str(f.type) == "dict" else _named(f.name)  # a recipe's table has no option
            raise UserError(f"{name} must be {_TYPE_WORDS[str(f.type)]}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise UserError(f"{_named(f.name)} must be a finite number, got {value!r}")
    for names, test, wanted in ((positive, lambda v: v > 0, "> 0"), (non_negative, lambda v: v >= 0, ">= 0"),
                                (below_one, lambda v: 0 <= v < 1, "in [0, 1)")):
        for name in names:
            if not test(getattr(settings, name)):
                raise UserError(f"{_named(name)} must be {wanted}, got {getattr(settings, name)!r}")
    for name, allowed in (choices or {}).items():
        if getattr(settings, name) not in allowed:
            raise UserError(f"{_named(name)} must be one of {', '.join(map(repr, allowed))}, "
                            f"got {getattr(settings, name)!r}")


def _named(name: str) -> str:
    return f"{name} (--{name.replace('_', '-')})"
