"""Options defined once: each config field carries its help text and constraints.

A config is a dataclass whose fields are made with :func:`option`. From it
come the command-line flags (``max_len`` → ``--max-len``), the Make variables
(``max_len`` → ``MAX_LEN=``), the checks (:func:`validate`, scikit-learn
style: declared constraints, errors naming the bad value) and the name an
error message uses for an option, in the terms of the interface the user
called framecache through (:func:`option_name`).
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import typing
from dataclasses import dataclass

import numpy as np

from framecache.common.errors import FramecacheError

# The interface the user is driving framecache through: decides how messages name options.
PYTHON, CLI, MAKE = "python", "cli", "make"
# Set by the Makefile on every command it runs: flags then also come from Make variables.
MAKE_ENV = "FRAMECACHE_MAKE"
_interface = PYTHON


def set_interface(name: str) -> None:
    """Say how the user calls framecache (``python``, ``cli`` or ``make``): messages name options accordingly."""
    global _interface
    if name not in (PYTHON, CLI, MAKE):
        raise ValueError(f"interface must be {PYTHON}, {CLI} or {MAKE}, got {name!r}")
    _interface = name


def interface() -> str:
    return _interface


def flag(name: str) -> str:
    """The command-line flag of a field: ``max_len`` → ``--max-len``."""
    return "--" + name.replace("_", "-")


def make_variable(name: str) -> str:
    """The Make variable of a field: ``max_len`` → ``MAX_LEN``."""
    return name.upper()


def option_name(name: str, value: object = None) -> str:
    """How the user's interface spells option ``name`` (with ``value``, how to set it).

    >>> set_interface("make"); option_name("test_fraction", 0.1)
    'TEST_FRACTION=0.1'
    >>> set_interface("cli"); option_name("test_fraction", 0.1)
    '--test-fraction 0.1'
    >>> set_interface("python"); option_name("test_fraction")
    'test_fraction'
    """
    if _interface == MAKE:
        shown = {True: 1, False: 0}.get(value, value) if isinstance(value, bool) else value
        return make_variable(name) if value is None else f"{make_variable(name)}={shown}"
    if _interface == CLI:
        if isinstance(value, bool):
            return flag(name) if value else "--no-" + flag(name)[2:]
        return flag(name) if value is None else f"{flag(name)} {value}"
    return name if value is None else f"{name}={value!r}"


# Make targets whose name differs from the framecache command they run.
MAKE_TARGETS = {"extract": "features"}


def command_hint(command: str, **values: object) -> str:
    """A command the user can run, spelled for their interface.

    >>> set_interface("make"); command_hint("info", features="study.h5")
    'make info FEATURES=study.h5'
    >>> set_interface("cli"); command_hint("train", run="runs/a")
    'framecache train --run runs/a'
    """
    if _interface == MAKE:
        return " ".join([f"make {MAKE_TARGETS.get(command, command)}", *(option_name(name, value) for name, value in values.items())])
    if command == "info" and "features" in values:  # info takes the cache as its argument
        return f"framecache info {values['features']}"
    with_cli = [option_name(name, value) if _interface == CLI else f"{flag(name)} {value}" for name, value in values.items()]
    return " ".join([f"framecache {command}", *with_cli])


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

    >>> set_interface("cli"); check("batch_size", 0, int, Interval(1, None))
    Traceback (most recent call last):
    ...
    framecache.common.errors.FramecacheError: --batch-size must be >= 1, got 0
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
    """Check every field against its declared type and constraints; raise FramecacheError naming the bad one."""
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if value is None and optional(type(config), field.name):
            continue
        check(field.name, value, value_type(type(config), field.name), field.metadata.get("interval"), field.metadata.get("choices"))


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
        else:
            parser.add_argument(flag(field.name), type=kind, default=default, choices=choices, help=help_text)


def make_defaults(parser: argparse.ArgumentParser, skip: tuple[str, ...] = (), environ: typing.Mapping[str, str] | None = None) -> None:
    """Under make, turn the Make variables that name a parser's flags (``MAX_LEN=32``) into its defaults.

    The Makefile exports every variable given on its command line and sets
    ``FRAMECACHE_MAKE=1``; flags given explicitly (``ARGS=...``) still win.
    """
    environ = os.environ if environ is None else environ
    if not environ.get(MAKE_ENV):
        return
    defaults = {}
    for action in parser._actions:
        text = environ.get(make_variable(action.dest), "")
        if not action.option_strings or action.dest in ("help", *skip) or not text.strip():
            continue
        is_flag = isinstance(action, (argparse._StoreTrueAction, argparse.BooleanOptionalAction))
        try:
            value = parse_bool(text) if is_flag else (action.type or str)(text.strip())
        except (ValueError, argparse.ArgumentTypeError):
            kind = "true/false (1/0)" if is_flag else getattr(action.type, "__name__", "value")
            raise FramecacheError(f"{make_variable(action.dest)}={text} is not a valid {kind}") from None
        if action.choices is not None and value not in action.choices:
            raise FramecacheError(f"{make_variable(action.dest)}={text}: choose one of {', '.join(map(str, action.choices))}")
        defaults[action.dest] = value
    parser.set_defaults(**defaults)


def _list_of(kind: type, flag_text: str):
    def parse(text: str) -> list:
        try:
            return [parse_value(kind, item.strip()) for item in text.split(",") if item.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"{flag_text} takes comma-separated {kind.__name__} values, got {text!r}") from None

    return parse
