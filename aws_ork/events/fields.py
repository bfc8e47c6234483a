"""Typed access to untrusted JSON: a field of the wrong type reads as missing."""

from __future__ import annotations

import string
from collections.abc import Mapping
from typing import Any

from aws_ork.ids import is_instance_id


def text(doc: Mapping[str, Any], name: str) -> str | None:
    """``doc[name]`` if it is a string, else None."""
    value = doc.get(name)
    return value if isinstance(value, str) else None


def mapping(doc: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    """``doc[name]`` if it is a JSON object, else None."""
    value = doc.get(name)
    return value if isinstance(value, dict) else None


def instance_id(doc: Mapping[str, Any], name: str) -> tuple[str | None, str]:
    """The instance id in ``doc[name]`` and '' or None and the reason it is unusable."""
    value = doc.get(name)
    if value is None:
        return None, f"no {name}"
    if not is_instance_id(value):
        return None, f"{name} {shorten(value)} is not an instance id"
    return value, ""


def shorten(value: object, limit: int = 40) -> str:
    """repr() cut to a length that keeps hostile input from flooding the log.

    repr escapes every control character, newline and non-printable code point, so the
    result is one line that cannot forge another log line."""
    rendered = repr(value)
    return rendered if len(rendered) <= limit else rendered[: limit - 3] + "..."


def clean(value: str, limit: int = 80) -> str:
    """A message's text as it may appear in a log line: escaped like :func:`shorten`, without
    the quotes, cut to ``limit``."""
    rendered = repr(value)[1:-1]
    return rendered if len(rendered) <= limit else rendered[: limit - 3] + "..."


#: What :func:`safe` keeps: letters, digits and `` ._:/@+,=-`` (space included). Nothing a
#: shell acts on (``$``, backquote, quotes, ``;|&<>()``, backslash, globs, ``~``, ``!``,
#: ``#``, newlines) and nothing a Jinja or YAML template does (``{``, ``}``, ``%``, ``[``).
SAFE_CHARACTERS = frozenset(string.ascii_letters + string.digits + " ._:/@+,=-")


def safe(value: str, limit: int = 80) -> str:
    """Text for a Salt reactor event: cut to ``limit``, every character outside
    :data:`SAFE_CHARACTERS` replaced by ``_`` (a recipe that pastes it into ``cmd.run`` or a
    template runs no shell and renders no template)."""
    return "".join(c if c in SAFE_CHARACTERS else "_" for c in value[:limit])
