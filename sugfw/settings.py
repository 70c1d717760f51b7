"""Settings declared once: each one's environment variable, flag, type, default, check and help.

A setting is a dataclass field made by ``setting(...)``. Everything else comes from those
declarations: the environment parsing (``from_environ``), the argparse flags (``add_flags``,
``from_args``), the checks (``check_all``) and the Markdown table of docs/settings.md
(``markdown_table``). Secrets are environment-only (command lines are visible to every user of
the machine) and shown masked.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import chain
from pathlib import Path
from typing import Any

from sugfw.errors import InvalidInputError

METADATA_KEY = "sugfw.setting"

Parse = Callable[[str, str], Any]
"""(text, name) → value; raises ``InvalidInputError`` naming ``name`` when the text is bad."""
Check = Callable[[Any, str], None]
"""(value, name) → None; raises ``InvalidInputError`` naming ``name`` when the value is bad."""


@dataclass(frozen=True)
class Kind:
    """How a setting's text becomes a value, and the name of that type in help and docs."""

    name: str
    parse: Parse


def _integer(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise InvalidInputError(f"{name}={text!r}: expected an integer") from None


def _number(text: str, name: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise InvalidInputError(f"{name}={text!r}: expected a number") from None


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def _boolean(text: str, name: str) -> bool:
    if text.lower() in _TRUE:
        return True
    if text.lower() in _FALSE:
        return False
    raise InvalidInputError(f"{name}={text!r}: expected 1 or 0 (true/false)")


TEXT = Kind("text", lambda text, name: text)
INTEGER = Kind("integer", _integer)
NUMBER = Kind("number", _number)
BOOLEAN = Kind("1/0", _boolean)
PATH = Kind("path", lambda text, name: Path(text).expanduser())


@dataclass(frozen=True)
class Setting:
    """One declared setting (the field's metadata), made by ``setting``.

    ``flag``: True derives ``--field-name``, a string names the flag, False keeps the setting
    environment-only (always so for a ``secret``, which is also masked in views). ``choices`` is
    a callable so that listing them (a registry) waits until a parser or a check needs them.
    ``many``: the flag takes one or more values, each parsed, joined into one tuple.
    ``strip=False`` keeps surrounding spaces (passwords). ``redact`` masks part of a value in
    views (a URL's credentials). ``default_text`` describes a ``None`` default ("per model").
    """

    env: str
    help: str
    kind: Kind = TEXT
    flag: str | bool = True
    check: Check | None = None
    choices: Callable[[], Sequence[str]] | None = None
    many: bool = False
    strip: bool = True
    secret: bool = False
    redact: Callable[[Any], Any] | None = None
    default_text: str | None = None
    metavar: str | None = None


def setting(default: Any, env: str, help: str, **options: Any) -> Any:
    """A dataclass field declaring a setting: its default, variable, help and ``Setting``
    options."""
    declaration = Setting(env, help, **options)
    return dataclasses.field(default=default, metadata={METADATA_KEY: declaration})


def declared(cls: type) -> Iterator[tuple[str, Setting, Any]]:
    """(field name, declaration, default) of every declared setting of the dataclass ``cls``."""
    for item in dataclasses.fields(cls):
        if METADATA_KEY in item.metadata:
            yield item.name, item.metadata[METADATA_KEY], item.default


def flag_of(name: str, declaration: Setting) -> str | None:
    """The setting's flag, or None for an environment-only setting."""
    if declaration.flag is False or declaration.secret:
        return None
    if declaration.flag is True:
        return "--" + name.replace("_", "-")
    return str(declaration.flag)


def one_of(choices: Callable[[], Sequence[str]]) -> Check:
    """A check that the value is one of ``choices()``."""

    def check(value: Any, name: str) -> None:
        allowed = choices()
        if value not in allowed:
            raise InvalidInputError(f"{name}={value!r}: expected one of {', '.join(allowed)}")

    return check


def at_least(least: float, expectation: str | None = None) -> Check:
    """A check that the value is at least ``least`` ("expected an integer >= N" otherwise)."""

    def check(value: Any, name: str) -> None:
        if value < least:
            raise InvalidInputError(
                f"{name}={value!r}: expected {expectation or f'an integer >= {least}'}"
            )

    return check


def above(bound: float, expectation: str) -> Check:
    """A check that the value is strictly above ``bound``."""

    def check(value: Any, name: str) -> None:
        if value <= bound:
            raise InvalidInputError(f"{name}={value!r}: expected {expectation}")

    return check


def _read(declaration: Setting, text: str | None) -> Any:
    """The value of one environment variable's text; unset or empty → None."""
    if text is None:
        return None
    if declaration.strip:
        text = text.strip()
    return declaration.kind.parse(text, declaration.env) if text else None


def from_environ(cls: type, environ: Mapping[str, str]) -> dict[str, Any]:
    """The settings of ``cls`` that ``environ`` sets (unset or empty ones left out), parsed."""
    values = {}
    for name, declaration, _ in declared(cls):
        value = _read(declaration, environ.get(declaration.env))
        if value is not None:
            values[name] = value
    return values


def check_all(instance: Any) -> None:
    """Every declared check on the instance's values; errors name the environment variable."""
    for name, declaration, _ in declared(type(instance)):
        value = getattr(instance, name)
        if value is None:
            continue
        if declaration.choices is not None and declaration.check is None:
            one_of(declaration.choices)(value, declaration.env)
        if declaration.check is not None:
            declaration.check(value, declaration.env)


def _argparse_type(declaration: Setting, flag: str) -> Callable[[str], Any]:
    def convert(text: str) -> Any:
        try:
            value = declaration.kind.parse(text, flag)
            # With choices argparse itself says which are allowed.
            if declaration.check is not None and declaration.choices is None:
                declaration.check(value, flag)
        except InvalidInputError as err:
            raise argparse.ArgumentTypeError(str(err)) from None
        return value

    return convert


def default_text(declaration: Setting, default: Any) -> str:
    """The default as help and docs show it."""
    if declaration.default_text is not None:
        return declaration.default_text
    if default is None:
        return "unset"
    if isinstance(default, bool):
        return "1" if default else "0"
    if isinstance(default, tuple):
        return ",".join(str(part) for part in default) or "none"
    return str(default)


def add_flags(parser: Any, cls: type, *, defaults: bool = False, show_env: bool = True) -> None:
    """A flag for every setting of ``cls`` that has one (``parser``: a parser or a group).

    Without ``defaults`` a flag not given stays None, so that it does not override the
    environment; with them the namespace holds every setting. ``show_env`` names the variable in
    the help (for programs that read it).
    """
    for name, declaration, default in declared(cls):
        flag = flag_of(name, declaration)
        if flag is None:
            continue
        options: dict[str, Any] = {
            "dest": name,
            "default": default if defaults else None,
            "help": (f"[{declaration.env}] " if show_env else "")
            + f"{declaration.help} (default {default_text(declaration, default)})".replace(
                "%", "%%"
            ),
        }
        if declaration.kind is BOOLEAN:
            options["action"] = "store_true"
        else:
            options["type"] = _argparse_type(declaration, flag)
            if declaration.choices is not None:
                options["choices"] = declaration.choices()
            if declaration.many:
                options["nargs"] = "+"
            if declaration.metavar is not None:
                options["metavar"] = declaration.metavar
        parser.add_argument(flag, **options)


def from_args(cls: type, args: argparse.Namespace) -> dict[str, Any]:
    """The settings of ``cls`` the parsed ``args`` hold (flags not given left out)."""
    values = {}
    for name, _, _ in declared(cls):
        value = getattr(args, name, None)
        if isinstance(value, list):  # a flag of one or more values, each parsed to a tuple
            value = tuple(chain.from_iterable(value))
        if value is not None:
            values[name] = value
    return values


def markdown_table(cls: type, skip: Collection[str] = ()) -> str:
    """The settings of ``cls`` (less ``skip``) as a Markdown table: variable, flag, type,
    default, meaning."""
    rows = [
        "| variable | flag | type | default | meaning |",
        "|---|---|---|---|---|",
    ]
    for name, declaration, default in declared(cls):
        if name in skip:
            continue
        flag = flag_of(name, declaration)
        kind = " / ".join(declaration.choices()) if declaration.choices else declaration.kind.name
        cells = (
            f"`{declaration.env}`",
            f"`{flag}`" if flag else "environment only",
            kind,
            default_text(declaration, default),
            declaration.help,
        )
        rows.append("| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |")
    return "\n".join(rows) + "\n"
