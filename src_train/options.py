"""Options from one source: a dataclass field is the option, and the command line is made from it.

A field declared with :func:`option` carries its help text (and optionally its choices, flag
name and metavar); :func:`add_options` turns every such field of a dataclass into an argparse
argument with the field's type and default, and :func:`options_from_args` builds the dataclass
back from the parsed namespace. Adding an option to a command is then one field. Fields whose
type is itself a dataclass are expanded in place (their options appear flat on the command line).

Rules: ``bool`` fields become flags (``--name`` when the default is False, ``--no-name`` when it
is True); ``X | None`` fields take an ``X``; ``tuple[X, ...]`` fields take one or more values,
separated by spaces or commas (``--models unet segnet`` = ``--models unet,segnet``), each
checked against the choices; a fixed-length ``tuple[X, X, X]`` takes exactly that many.
Options the user does not give keep the dataclass default (argparse never fills them in), so the
dataclass stays the only place a default is written.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any

#: Key of this module's entry in ``dataclasses.field(metadata=...)``.
_META = "lunaseg_option"

ChoicesSpec = Sequence[Any] | Callable[[], Sequence[Any]]

#: How ``--help`` names a value of each type when the field gives no metavar.
_METAVARS: dict[Any, str] = {int: "N", float: "NUM"}


def option(
    default: Any = dataclasses.MISSING,
    *,
    help: str,
    default_factory: Callable[[], Any] | Any = dataclasses.MISSING,
    flag: str | None = None,
    choices: ChoicesSpec | None = None,
    metavar: str | None = None,
    cli: bool = True,
) -> Any:
    """A dataclass field that is also a command-line option.

    Args:
        default, default_factory: as :func:`dataclasses.field`.
        help: one line for ``--help`` (the default is appended automatically).
        flag: the option's name (default ``--field-name``, or ``--no-field-name`` for a bool
            that defaults to True).
        choices: allowed values, or a callable returning them (a registry read at parse time).
        metavar: the value's name in ``--help``.
        cli: False keeps the field off the command line (set in code only).
    """
    meta = {_META: {"help": help, "flag": flag, "choices": choices, "metavar": metavar, "cli": cli}}
    if default_factory is not dataclasses.MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=meta)
    return dataclasses.field(default=default, metadata=meta)


class _CommaItems:
    """argparse ``type`` of one token of a tuple option: ``"a,b"`` -> ``[X("a"), X("b")]``."""

    def __init__(self, item_type: Callable[[str], Any]) -> None:
        self.item_type = item_type
        # argparse names the type in "invalid <name> value" messages
        self.__name__ = getattr(item_type, "__name__", "value")

    def __call__(self, text: str) -> list[Any]:
        parts = [part.strip() for part in text.split(",")]
        if "" in parts:
            raise argparse.ArgumentTypeError(f"empty item in {text!r}")
        try:
            return [self.item_type(part) for part in parts]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r}: every item must be a {self.__name__}"
            ) from None


def _tuple_action(length: int | None, choices: Sequence[Any] | None) -> type[argparse.Action]:
    """An argparse action joining the tokens of a tuple option into one flat list."""

    class JoinItems(argparse.Action):
        def __call__(
            self,
            parser: argparse.ArgumentParser,
            namespace: argparse.Namespace,
            values: Any,
            option_string: str | None = None,
        ) -> None:
            items = [item for token in values for item in token]
            if choices is not None:
                bad = [item for item in items if item not in choices]
                if bad:
                    allowed = ", ".join(map(str, choices))
                    parser.error(f"argument {option_string}: invalid choice {bad[0]!r} ({allowed})")
            if length is not None and len(items) != length:
                parser.error(
                    f"argument {option_string}: expected {length} values, got {len(items)}"
                )
            setattr(namespace, self.dest, items)

    return JoinItems


def _shown_default(default: Any) -> str:
    """How ``--help`` writes a default (tuples as the comma list a user would type)."""
    if default is dataclasses.MISSING or default is None:
        return ""
    if isinstance(default, tuple):
        return ",".join(map(str, default))
    return str(default)


def _unwrap_optional(tp: Any) -> tuple[Any, bool]:
    """``(X, True)`` for ``X | None``, else ``(tp, False)``."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if len(args) == 1:
            return args[0], True
    return tp, False


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _dest(prefix: str, name: str) -> str:
    return f"{prefix}{name}"


def _fields(cls: type) -> list[tuple[dataclasses.Field, Any]]:
    hints = typing.get_type_hints(cls)
    return [(f, hints[f.name]) for f in dataclasses.fields(cls)]


def add_options(
    parser: argparse.ArgumentParser | argparse._ArgumentGroup,
    cls: type,
    *,
    skip: Sequence[str] = (),
    only: Sequence[str] | None = None,
    prefix: str = "",
) -> None:
    """Add an argument to ``parser`` for every :func:`option` field of dataclass ``cls``.

    ``skip`` names fields to leave out (e.g. one the command takes as a positional argument);
    ``only`` keeps just the named fields (a command that shares some of another's options).
    Nested dataclass fields are expanded; their destinations are ``"outer.inner"``.
    """
    for f, tp in _fields(cls):
        if f.name in skip or (only is not None and f.name not in only):
            continue
        inner, _optional = _unwrap_optional(tp)
        if dataclasses.is_dataclass(inner) and isinstance(inner, type):
            add_options(parser, inner, skip=skip, prefix=f"{prefix}{f.name}.")
            continue
        meta = f.metadata.get(_META)
        if meta is None or not meta["cli"]:
            continue
        default = _default_of(f)
        kwargs: dict[str, Any] = {"dest": _dest(prefix, f.name), "default": argparse.SUPPRESS}
        if default is dataclasses.MISSING:
            kwargs["required"] = True
        shown = _shown_default(default)
        help_text = meta["help"]
        flag = _flag(f, inner, default)
        if inner is bool:
            kwargs["action"] = "store_false" if default else "store_true"
        else:
            choices = meta["choices"]
            allowed = None if choices is None else list(choices() if callable(choices) else choices)
            item_type = inner
            if typing.get_origin(inner) is tuple:
                args = typing.get_args(inner)
                item_type = args[0]
                length = None if len(args) == 2 and args[1] is Ellipsis else len(args)
                kwargs["nargs"] = "+"
                kwargs["type"] = _CommaItems(item_type)
                kwargs["action"] = _tuple_action(length, allowed)
                if allowed is not None:
                    help_text += f" (from {', '.join(map(str, allowed))})"
            else:
                kwargs["type"] = inner
                if allowed is not None:
                    kwargs["choices"] = allowed
            if shown != "":
                help_text += f" (default: {shown})"
            if meta["metavar"]:
                kwargs["metavar"] = meta["metavar"]
            elif "choices" not in kwargs:
                kwargs["metavar"] = _METAVARS.get(item_type, f.name.upper())
        kwargs["help"] = help_text
        parser.add_argument(flag, **kwargs)


def _flag(f: dataclasses.Field, inner: Any, default: Any) -> str:
    """The option's name on the command line (see the module docstring)."""
    given = f.metadata[_META]["flag"]
    if given:
        return str(given)
    dashed = f.name.replace("_", "-")
    return f"--no-{dashed}" if inner is bool and default is True else f"--{dashed}"


def option_args(cls: type, values: dict[str, Any]) -> list[str]:
    """The command-line tokens that set ``values`` (field name -> value) of dataclass ``cls``,
    in the order given, as :func:`add_options` parses them: what a form that builds a command line
    (the viewer's Training widget) passes to the CLI. A bool is its flag when it differs from
    the default (nothing otherwise); a tuple is one comma list; None is left out. An unknown
    name or a field that is no option raises ``KeyError``."""
    fields = {f.name: (f, tp) for f, tp in _fields(cls)}
    tokens: list[str] = []
    for name, value in values.items():
        f, tp = fields[name]
        meta = f.metadata.get(_META)
        if meta is None or not meta["cli"]:
            raise KeyError(f"{cls.__name__}.{name} is no command-line option")
        inner, _optional = _unwrap_optional(tp)
        default = _default_of(f)
        if value is None:
            continue
        if inner is bool:
            if bool(value) != bool(default):
                tokens.append(_flag(f, inner, default))
            continue
        text = ",".join(map(str, value)) if isinstance(value, tuple | list) else str(value)
        tokens += [_flag(f, inner, default), text]
    return tokens


def option_choices(cls: type, name: str) -> list[Any] | None:
    """The allowed values of option field ``name`` of ``cls`` (None: any value)."""
    field = next(f for f in dataclasses.fields(cls) if f.name == name)
    choices = field.metadata[_META]["choices"]
    return None if choices is None else list(choices() if callable(choices) else choices)


def options_from_args(cls: type, args: argparse.Namespace | dict[str, Any], **given: Any) -> Any:
    """Build dataclass ``cls`` from a namespace filled by :func:`add_options`.

    Options absent from ``args`` keep their defaults; ``given`` sets fields directly (it wins
    over ``args``). Tuples arrive as lists from argparse and are converted back.
    """
    values = dict(vars(args) if isinstance(args, argparse.Namespace) else args)
    return _build(cls, values, "", given)


def _build(cls: type, values: dict[str, Any], prefix: str, given: dict[str, Any]) -> Any:
    kwargs: dict[str, Any] = {}
    for f, tp in _fields(cls):
        inner, _optional = _unwrap_optional(tp)
        if f.name in given and not prefix:
            kwargs[f.name] = given[f.name]
            continue
        if dataclasses.is_dataclass(inner) and isinstance(inner, type):
            nested_prefix = f"{prefix}{f.name}."
            if any(k.startswith(nested_prefix) for k in values):
                kwargs[f.name] = _build(inner, values, nested_prefix, {})
            continue
        key = _dest(prefix, f.name)
        if key in values:
            value = values[key]
            if typing.get_origin(inner) is tuple and isinstance(value, list):
                value = tuple(value)
            kwargs[f.name] = value
    return cls(**kwargs)


def option_help(cls: type) -> dict[str, str]:
    """Field name -> help text of every :func:`option` field (for docs and widgets' tooltips)."""
    return {
        f.name: f.metadata[_META]["help"] for f in dataclasses.fields(cls) if _META in f.metadata
    }
