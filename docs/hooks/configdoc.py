"""Reference tables for configuration dataclasses, generated from the code.

:func:`settings` reads a frozen config dataclass (such as :class:`~shipper.config.ShipperConfig`)
and returns one :class:`Setting` per field: its name (the keyword argument and YAML key; nested
dataclasses become dotted names, lists of them ``name[].key``), its environment variables, its
type, its default and the one line of help kept next to the field::

    timeout: float = field(default=10.0, metadata={"help": "connect and read timeout ..."})

``metadata["default_doc"]`` replaces the default where it is computed at run time (a directory
under the user's cache, say), ``metadata["type_doc"]`` the type where the field stores another
shape than users write (a mapping kept as pairs). A field without help, or an environment
variable naming a setting that does not exist, raises :class:`ConfigDocError` naming it, so the
docs cannot be built from an undocumented setting.

The docs use it through markers in Markdown, expanded by :func:`expand`::

    <!-- config-table: shipper.config:ShipperConfig env=shipper.config:ENV_VARS -->

mkdocs.yml loads this module as a hook (:func:`on_page_markdown`), so docs/configuration.md is
rendered from the dataclasses at every build; tests/deploy/test_docs.py checks the same expansion.
"""

from __future__ import annotations

import dataclasses
import importlib
import re
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from shipper._units import format_seconds

__all__ = [
    "ConfigDocError",
    "Setting",
    "expand",
    "markdown_table",
    "markers",
    "on_page_markdown",
    "settings",
]

MARKER = re.compile(
    r"<!--\s*config-table:\s*(?P<target>[\w.]+:\w+)(?:\s+env=(?P<env>[\w.]+:\w+))?\s*-->"
)

_FENCE = re.compile(r"^\s*(`{3,}|~{3,})")
_KIB = 1024
# Probe values: a setting the class's own parser reads "64KiB" as 65536 is a size, one it reads
# "1500ms" as 1.5 is a duration. Asking the parser keeps this module free of a second list.
_SIZE_PROBE, _SIZE_VALUE = "64KiB", 64 * _KIB
_DURATION_PROBE, _DURATION_VALUE = "1500ms", 1.5


class ConfigDocError(ValueError):
    """A config class cannot be documented as it is; the message names the field."""


@dataclass(frozen=True)
class Setting:
    """One row of the reference."""

    name: str
    env: tuple[str, ...]
    type: str
    default: str
    help: str


def settings(cls: type[Any], env_vars: Mapping[str, str] | None = None) -> list[Setting]:
    """Every setting of the dataclass ``cls`` (nested dataclasses flattened), with the
    environment variables of ``env_vars`` (variable -> dotted setting name)."""
    if not dataclasses.is_dataclass(cls):
        raise ConfigDocError(f"{cls!r} is not a dataclass")
    rows = list(_rows(cls, prefix=""))
    names = {row.name for row in rows}
    by_setting: dict[str, list[str]] = {}
    for var, name in (env_vars or {}).items():
        if name not in names:
            raise ConfigDocError(
                f"environment variable {var} names the setting {name!r}, which "
                f"{cls.__name__} does not have"
            )
        by_setting.setdefault(name, []).append(var)
    return [dataclasses.replace(row, env=tuple(by_setting.get(row.name, ()))) for row in rows]


def markdown_table(rows: Sequence[Setting]) -> str:
    """The rows as a Markdown table: setting, environment variable, type, default, meaning."""
    out = [
        "| setting | environment variable | type | default | meaning |",
        "| --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        env = ", ".join(f"`{var}`" for var in row.env) or "—"
        cells = (f"`{row.name}`", env, row.type, row.default, row.help)
        out.append("| " + " | ".join(_cell(c) for c in cells) + " |")
    return "\n".join(out) + "\n"


def markers(markdown: str) -> list[re.Match[str]]:
    """The config-table markers of a page: each alone on its line, outside code blocks."""
    found = []
    fence: str | None = None
    for line in markdown.splitlines():
        opening = _FENCE.match(line)
        if opening is not None:
            if fence is None:
                fence = opening.group(1)
            elif opening.group(1).startswith(fence) and not line.strip()[len(fence):].strip():
                fence = None
            continue
        match = MARKER.fullmatch(line.strip())
        if fence is None and match is not None:
            found.append(match)
    return found


def expand(markdown: str) -> str:
    """Replace every ``<!-- config-table: module:Class [env=module:MAPPING] -->`` marker (alone
    on its line, outside code blocks) by the table of that class."""
    for match in markers(markdown):
        cls = _resolve(match["target"])
        env = _resolve(match["env"]) if match["env"] else None
        if not isinstance(cls, type):
            raise ConfigDocError(f"{match['target']} is not a class")
        if env is not None and not isinstance(env, Mapping):
            raise ConfigDocError(f"{match['env']} is not a mapping of variable -> setting")
        markdown = markdown.replace(match.group(0), markdown_table(settings(cls, env)).rstrip(), 1)
    return markdown


def on_page_markdown(markdown: str, **_: Any) -> str:
    """mkdocs hook: expand the config-table markers of every page."""
    return expand(markdown)


# ----------------------------------------------------------------------------- details


def _resolve(target: str) -> Any:
    module_name, _, attr = target.partition(":")
    try:
        return getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as exc:
        raise ConfigDocError(f"config-table marker: cannot find {target} ({exc})") from exc


def _rows(cls: type[Any], prefix: str) -> list[Setting]:
    hints = typing.get_type_hints(cls)
    rows: list[Setting] = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        name = prefix + f.name
        hint = _without_none(hints[f.name])
        nested, list_of = _nested_dataclass(hint)
        if nested is not None:
            rows.extend(_rows(nested, f"{name}[]." if list_of else f"{name}."))
            continue
        help_text = f.metadata.get("help")
        if not isinstance(help_text, str) or not help_text.strip() or "\n" in help_text:
            raise ConfigDocError(
                f"{cls.__name__}.{f.name} has no one-line help: add "
                f'metadata={{"help": "..."}} to its field()'
            )
        kind = _kind(cls, f.name)
        shown_type = f.metadata.get("type_doc")
        rows.append(Setting(name=name, env=(),
                            type=shown_type if isinstance(shown_type, str)
                            else _type_text(hint, kind),
                            default=_default_text(f, kind), help=help_text.strip()))
    return rows


def _without_none(hint: Any) -> Any:
    if isinstance(hint, types.UnionType) or typing.get_origin(hint) is typing.Union:
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1:
            return args[0]
    return hint


def _nested_dataclass(hint: Any) -> tuple[type[Any] | None, bool]:
    if isinstance(hint, type) and dataclasses.is_dataclass(hint):
        return hint, False
    if typing.get_origin(hint) in (list, tuple, Sequence):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        if len(args) == 1 and isinstance(args[0], type) and dataclasses.is_dataclass(args[0]):
            return args[0], True
    return None, False


def _kind(cls: type[Any], name: str) -> str | None:
    """"size" or "duration" when the class's own parser (``from_mapping``) reads a size or a
    duration string for this setting; None otherwise."""
    parse = getattr(cls, "from_mapping", None)
    if parse is None:
        return None
    for kind, probe, value in (("size", _SIZE_PROBE, _SIZE_VALUE),
                               ("duration", _DURATION_PROBE, _DURATION_VALUE)):
        try:
            if getattr(parse({name: probe}), name) == value:
                return kind
        except Exception:  # the parser refused the probe: not this kind
            continue
    return None


def _type_text(hint: Any, kind: str | None) -> str:
    if kind is not None:
        return kind
    if typing.get_origin(hint) is Literal:
        return " or ".join(f"`{value}`" for value in typing.get_args(hint))
    alias = typing.get_origin(hint)
    if alias in (tuple, list, Sequence):
        args = [a for a in typing.get_args(hint) if a is not Ellipsis]
        inner = _type_text(args[0], None) if len(args) == 1 else "value"
        return f"list of {inner}"
    return {bool: "bool", int: "int", float: "number", str: "text"}.get(
        hint, getattr(hint, "__name__", str(hint))
    )


def _default_text(f: dataclasses.Field[Any], kind: str | None) -> str:
    shown = f.metadata.get("default_doc")
    if isinstance(shown, str):
        return shown
    if f.default is not dataclasses.MISSING:
        value: Any = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if value is None or value in ((), []):
        return "none"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if kind == "size" and isinstance(value, int):
        return f"`{_size_text(value)}`"
    if kind == "duration" and isinstance(value, (int, float)):
        return f"`{format_seconds(value)}`"
    if isinstance(value, (tuple, list)):
        return ", ".join(f"`{v}`" for v in value)
    return f"`{value}`"


def _size_text(value: int) -> str:
    for unit, factor in (("GiB", _KIB**3), ("MiB", _KIB**2), ("KiB", _KIB)):
        if value and value % factor == 0:
            return f"{value // factor}{unit}"
    return str(value)


def _cell(text: str) -> str:
    return text.replace("|", "\\|")
