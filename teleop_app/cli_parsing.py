"""One command's settings from its command line: tyro reads the settings dataclass.

    settings = parse(CollectConfig, ["--task", "box_pickup", ...], prog="refine-dp collect")

Every field of the dataclass (nested config dataclasses included) is a hyphenated flag, its
docstring or `Attributes:` entry is the help, and its default is the dataclass's: the command line
keeps no defaults of its own.

Config dataclasses live next to the code they configure, often in modules the command line does
not own. What they lack for the command line (help for an undocumented field, the choices of a
`str` field, an older flag spelling, a unit) is added here by a `Flag` overlay, declared by the
command that uses the config in its `FLAGS` class variable; the dataclass stays as it is.

Errors: a rejected command line prints `refine-dp: error: <message>` on stderr and exits with
status 2 (`SystemExit`, as argparse did). A `ValueError` raised while the dataclasses are built
(their own validation, e.g. an unknown task) is raised again as a `ValueError`, which
`teleop_app.cli.main` reports like any other bad input.
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Annotated, Any, Literal, TypeVar, get_args

import tyro
import tyro._errors as tyro_errors  # a private hook; tyro is pinned to one version
from tyro.constructors import (
    ConstructorRegistry,
    PrimitiveConstructorSpec,
    StructConstructorSpec,
    StructFieldSpec,
)
from tyro.constructors._struct_spec_dataclass import dataclass_rule

PROG = "refine-dp"

T = TypeVar("T")


@dataclass(frozen=True)
class Flag:
    """How the command line shows one field of a config dataclass it cannot annotate.

    Attributes:
        help: the help text (default: the field's docstring or comment).
        choices: the values the parser accepts and lists; the dataclass still validates.
        aliases: other spellings of the flag (e.g. the one users had before), not prefixed.
        name: the flag's name instead of the field's, without the parent's prefix.
        scale: the flag's value times `scale` is the field's (60: a flag in minutes for a field
            in seconds); the help shows the default in the flag's unit.
        metavar: the value's placeholder in the help.
        required: the flag must be given although the field has a default.
        suppress: no flag: the field keeps its default.
    """

    help: str | None = None
    choices: tuple[str, ...] | None = None
    aliases: tuple[str, ...] = ()
    name: str | None = None
    scale: float | None = None
    metavar: str | None = None
    required: bool = False
    suppress: bool = False


Flags = Mapping[type, Mapping[str, Flag]]
"""Overlays by config dataclass, then by field name."""


def flag_registry(flags: Flags) -> ConstructorRegistry:
    """A tyro registry that shows the fields of the dataclasses in `flags` as they ask.

    Raises:
        TypeError: a `Flag` names a field its dataclass does not have (a bug, not bad input).
    """
    for cls, by_field in flags.items():
        unknown = set(by_field) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise TypeError(f"{cls.__name__} has no field(s) {sorted(unknown)} for its Flags")
    registry = ConstructorRegistry()

    @registry.struct_rule
    def overlay(info: Any) -> StructConstructorSpec | None:
        by_field = flags.get(info.type)
        if by_field is None:
            return None
        spec = dataclass_rule(info)
        assert spec is not None  # flags are keyed by dataclasses
        return dataclasses.replace(spec, fields=tuple(
            _apply(field, by_field.get(field.name)) for field in spec.fields))

    return registry


def _apply(field: StructFieldSpec, flag: Flag | None) -> StructFieldSpec:
    """`field` with the type, markers and default `flag` asks for."""
    if flag is None:
        return field
    typ = field.type
    if flag.choices is not None:
        typ = Literal[flag.choices]  # type: ignore[valid-type]
        if type(None) in get_args(field.type):
            typ = typ | None
    markers: list[Any] = [tyro.conf.arg(
        help=flag.help, aliases=flag.aliases or None, name=flag.name, metavar=flag.metavar,
        prefix_name=False if flag.name else None)]
    if flag.scale is not None:
        markers.append(_scaled(flag.scale, flag.metavar or "FLOAT"))
    if flag.suppress:
        markers.append(tyro.conf.Suppress)
    default = tyro.MISSING if flag.required else field.default
    return dataclasses.replace(field, type=Annotated[(typ, *markers)], default=default,
                               helptext=flag.help or field.helptext)


def _scaled(scale: float, metavar: str) -> PrimitiveConstructorSpec:
    """Reads a float given in a unit `scale` times the field's."""
    return PrimitiveConstructorSpec(
        nargs=1, metavar=metavar, instance_from_str=lambda args: float(args[0]) * scale,
        is_instance=lambda value: isinstance(value, (int, float)),
        str_from_instance=lambda value: [f"{value / scale:g}"])


def parse(settings: type[T], argv: Sequence[str], prog: str,
          description: str | None = None) -> T:
    """The `settings` dataclass from `argv`, with the overlays of its `FLAGS` class variable.

    `-h` / `--help` prints the help and exits with status 0.

    Raises:
        SystemExit: status 2 after `refine-dp: error: <message>` when the command line is
            rejected (a missing or unknown flag, a bad value or choice, conflicting flags).
        ValueError: the dataclasses rejected the values (their message, unchanged).
    """
    registry = flag_registry(getattr(settings, "FLAGS", {}))
    with tyro_errors.on_parse_error(_reject):
        return tyro.cli(settings, args=list(argv), prog=prog, description=description,
                        registry=registry)


def _reject(event: tyro_errors.ParseErrorEvent) -> None:
    """tyro's parse-error hook: one argparse-style line instead of tyro's box."""
    if isinstance(event, tyro_errors.InstantiationFailure) and event.argument is None:
        raise ValueError(event.message)  # a dataclass's own validation: bad input, status 2
    message = _message(event)
    if message is None:  # an event this tyro version added: its own rendering
        return
    print(f"{PROG}: error: {message}", file=sys.stderr)
    raise SystemExit(2)


def _message(event: tyro_errors.ParseErrorEvent) -> str | None:
    """The one-line message for a parse failure (argparse's wording where it had one)."""
    e = tyro_errors
    if isinstance(event, e.MissingArgs):
        names = ", ".join(_flag(a.arg) for a in event.missing_arguments)
        extra = f"; unrecognized: {' '.join(event.unrecognized_tokens)}" if (
            event.unrecognized_tokens) else ""
        return f"the following arguments are required: {names}{extra}"
    if isinstance(event, e.MissingMutexGroup):
        return "; ".join("one of the arguments " + " ".join(_flag(a.arg) for a in group)
                         + " is required" for group in event.groups)
    if isinstance(event, e.MutexConflict):
        return f"argument {event.second_token}: not allowed with argument {event.first_token}"
    if isinstance(event, e.InvalidChoice):
        return (f"argument {_flag(event.argument)}: invalid choice: {event.value!r} (choose "
                f"from {', '.join(repr(c) for c in event.choices)})")
    if isinstance(event, e.UnrecognizedArgs):
        return f"unrecognized arguments: {' '.join(event.tokens)}"
    if isinstance(event, e.BadValue):
        if event.reason == "fixed":
            return (f"argument {_flag(event.argument)}: takes no value, got "
                    f"{event.offending_value!r}")
        return f"argument {_flag(event.argument)}: expected a value"
    if isinstance(event, e.InstantiationFailure):  # a value the flag's type cannot read
        return f"argument {_flag(event.argument)}: {event.message}"
    return None


def _flag(arg: Any) -> str:
    """The spelling of an argument in messages: its metavar when positional, else its flag."""
    flags = arg.lowered.name_or_flags
    return str(arg.lowered.metavar or flags[-1]) if arg.is_positional() else flags[-1]
