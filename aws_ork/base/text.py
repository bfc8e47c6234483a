"""Text from outside (a message, a tag, a file Salt wrote) as it may reach a log line or an
event: bounded, and escaped so that it cannot forge a line or run in a shell or a template."""

from __future__ import annotations

import string


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
