"""Options defined once: each config field carries its help text and constraints.

A config is a dataclass whose fields are made with :func:`option`. From it
come the command-line flags (``max_len`` → ``--max-len``), the checks
(:func:`validate`, scikit-learn style: declared constraints, errors naming the
bad value) and the name an error message uses for an option
(:func:`option_name`): a Python keyword by default; the ``framecache`` command
spells flags (or, under make, Make variables) instead, with :func:`spelled`.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import dataclasses
import math
import typing
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from framecache.common.errors import FramecacheError

# The arguments of a ``framecache`` command given by position, not as a flag.
POSITIONAL = {"info": ("features",), "merge": ("caches",), "predict": ("videos",)}


class Spelling:
    """How messages spell options and commands: as Python keyword arguments, the library's own way.

    The ``framecache`` command installs its own spelling (flags, or Make
    variables under make) around its work with :func:`spelled`; the library
    never decides that itself, so messages are worded in one place.
    """

    def option(self, name: str, value: object = None) -> str:
        """``test_fraction`` -> ``test_fraction`` (with a value: ``test_fraction=0.1``)."""
        return name if value is None else f"{name}={value!r}"

    def command(self, command: str, values: dict[str, object]) -> str:
        """A command the user can run: the ``framecache`` command with its flags, then its positional arguments."""
        positional = POSITIONAL.get(command, ())
        words = [f"framecache {command}"]
        words += [command_line_option(name, value) for name, value in values.items() if name not in positional]
        words += [str(values[name]) for name in positional if name in values]
        return " ".join(words)


def command_line_option(name: str, value: object = None) -> str:
    """An option as the ``framecache`` command takes it: ``--test-fraction 0.1``, ``--no-appearance``."""
    if isinstance(value, bool):
        return flag(name) if value else "--no-" + flag(name)[2:]
    return flag(name) if value is None else f"{flag(name)} {value}"


_spelling: contextvars.ContextVar[Spelling | None] = contextvars.ContextVar("framecache_spelling", default=None)


def current_spelling() -> Spelling:
    """The spelling messages use here: the one :func:`spelled` installed, else the library's own."""
    spelling = _spelling.get()
    return Spelling() if spelling is None else spelling


@contextlib.contextmanager
def spelled(spelling: Spelling) -> Iterator[None]:
    """Messages made inside the block spell options and commands with ``spelling`` (the CLI's, for its run)."""
    token = _spelling.set(spelling)
    try:
        yield
    finally:
        _spelling.reset(token)


def flag(name: str) -> str:
    """The command-line flag of a field: ``max_len`` → ``--max-len``."""
    return "--" + name.replace("_", "-")


def option_name(name: str, value: object = None) -> str:
    """How the caller's interface spells option ``name`` (with ``value``, how to set it).

    >>> option_name("test_fraction", 0.1)
    'test_fraction=0.1'
    """
    return current_spelling().option(name, value)


def command_hint(command: str, **values: object) -> str:
    """A command the user can run, spelled for their interface.

    >>> command_hint("info", features="study.h5")
    'framecache info study.h5'
    >>> command_hint("train", run="runs/a")
    'framecache train --run runs/a'
    """
    return current_spelling().command(command, values)


@dataclass(frozen=True)
class Interval:
    """A numeric range; ``closed`` says which ends belong to it (``both``, ``left``, ``right``, ``neither``)."""

    low: float | None = None
    high: float | None = None
    closed: str = "both"

    def __contains__(self, value: float) -> bool:
        if self.low is not None and (value < self.low or (value == self.low and self.closed in ("right", "neither"))):
            return False
        if self.high is not None and (value > self.high or (value == self.high and self.closed in ("left", "neither"))):
            return False
        return True

    def describe(self) -> str:
        if self.high is None:
            return f"{'>=' if self.closed in ('both', 'left') else '>'} {self.low:g}"
        if self.low is None:
            return f"{'<=' if self.closed in ('both', 'right') else '<'} {self.high:g}"
        left = "[" if self.closed in ("both", "left") else "("
        right = "]" if self.closed in ("both", "right") else ")"
        return f"in {left}{self.low:g}, {self.high:g}{right}"


def option(default, help: str, *, choices: tuple | None = None, interval: Interval | None = None, **metadata):
    """A config field with its help text and constraints (``choices`` or an ``interval``)."""
    return dataclasses.field(default=default, metadata={"help": help, "choices": choices, "interval": interval, **metadata})


def value_type(config_class: type, name: str) -> type:
    """A field's value type, with ``X | None`` reduced to ``X``."""
    hint = typing.get_type_hints(config_class)[name]
    arguments = [argument for argument in typing.get_args(hint) if argument is not type(None)]
    return arguments[0] if arguments else hint


def optional(config_class: type, name: str) -> bool:
    return type(None) in typing.get_args(typing.get_type_hints(config_class)[name])


def check(name: str, value, kind: type | None = None, interval: Interval | None = None, choices: tuple | None = None):
    """Check one value (type, range, choices); raise FramecacheError naming the option as the user's interface does.

    The one validation helper: configs (:func:`validate`) and library functions use it alike.

    >>> check("batch_size", 0, int, Interval(1, None))
    Traceback (most recent call last):
    ...
    framecache.common.errors.FramecacheError: batch_size must be >= 1, got 0
    """
    if kind is int and (isinstance(value, bool) or not isinstance(value, (int, np.integer))):
        raise FramecacheError(f"{option_name(name)} must be a whole number, got {value!r}")
    if kind is float and (isinstance(value, bool) or not isinstance(value, (int, float, np.number)) or not math.isfinite(value)):
        raise FramecacheError(f"{option_name(name)} must be a number, got {value!r}")
    if kind is bool and not isinstance(value, bool):
        raise FramecacheError(f"{option_name(name)} must be true or false, got {value!r}")
    if kind is str and not isinstance(value, str):
        raise FramecacheError(f"{option_name(name)} must be a string, got {value!r}")
    if choices and value not in choices:
        raise FramecacheError(f"{option_name(name)} must be one of {', '.join(map(str, choices))}, got {value!r}")
    if interval is not None and value not in interval:
        raise FramecacheError(f"{option_name(name)} must be {interval.describe()}, got {value!r}")
    return value


def validate(config) -> None:
    """Check every field against its declared type and constraints; raise FramecacheError naming the bad one.

    A field declared ``many=True`` takes one value or a non-empty list of them, each checked."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if value is None and optional(type(config), field.name):
            continue
        values = value if field.metadata.get("many") and isinstance(value, (list, tuple)) else [value]
        if not values:
            raise FramecacheError(f"{option_name(field.name)} needs at least one value")
        for item in values:
            check(field.name, item, value_type(type(config), field.name), field.metadata.get("interval"), field.metadata.get("choices"))


def parse_bool(text: str) -> bool:
    if text.strip().lower() in ("1", "true", "yes", "on"):
        return True
    if text.strip().lower() in ("0", "false", "no", "off"):
        return False
    raise ValueError(f"expected true or false (1/0, yes/no), got {text!r}")


def parse_value(kind: type, text: str):
    """``text`` as a value of ``kind`` (bools accept 1/0, true/false, yes/no)."""
    return parse_bool(text) if kind is bool else kind(text)


def add_arguments(parser: argparse.ArgumentParser, config_class: type, skip: tuple[str, ...] = (), as_lists: tuple[str, ...] = ()) -> None:
    """One flag per field of ``config_class`` (but ``skip``); fields in ``as_lists`` take comma-separated values."""
    defaults = config_class()
    for field in dataclasses.fields(config_class):
        if field.name in skip:
            continue
        kind = value_type(config_class, field.name)
        default = getattr(defaults, field.name)
        choices = field.metadata.get("choices")
        help_text = field.metadata["help"] + ("" if default in (None, False) else f" (default {default})")
        if field.name in as_lists:
            parser.add_argument(flag(field.name), type=_list_of(kind, flag(field.name)), default=[default],
                                help=help_text + "; comma-separated values are swept")
        elif kind is bool and default:
            parser.add_argument(flag(field.name), action=argparse.BooleanOptionalAction, default=default, help=help_text)
        elif kind is bool:
            parser.add_argument(flag(field.name), action="store_true", default=default, help=help_text)
        elif field.metadata.get("many"):
            parser.add_argument(flag(field.name), type=kind, nargs="+", default=default, choices=choices, help=help_text + "; one or more")
        else:
            parser.add_argument(flag(field.name), type=kind, default=default, choices=choices, help=help_text)


def _list_of(kind: type, flag_text: str):
    def parse(text: str) -> list:
        try:
            return [parse_value(kind, item.strip()) for item in text.split(",") if item.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag_text} takes comma-separated {kind.__name__} values, got {text!r}") from None

    return parse
