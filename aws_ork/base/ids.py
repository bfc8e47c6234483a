"""What an EC2 instance id looks like.

0.4.5 handed ids to Salt as globs, so ``*`` accepted every pending key. Every id is checked
against this pattern before it reaches Salt; nothing else is ever used as a minion id.
"""

from __future__ import annotations

import re

INSTANCE_ID = re.compile(r"i-(?:[0-9a-f]{8}|[0-9a-f]{17})")


def is_instance_id(value: object) -> bool:
    """True only for ``i-`` followed by exactly 8 or 17 lower-case hex digits."""
    return isinstance(value, str) and INSTANCE_ID.fullmatch(value) is not None


#: Longest minion id accepted (a file name in each key directory and in the S3 mirror).
MAX_LENGTH = 128
#: Letters, digits, ``.``, ``_``, ``-``, starting with a letter or digit: no path separator,
#: no glob character (``* ? [ ]``), no leading dot or dash, nothing a shell or a log splits on.
_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]*")


def is_minion_id(value: object) -> bool:
    """True for an id that is safe as a Salt minion id, a key file name and an S3 key part:
    1-128 characters of ``[A-Za-z0-9._-]``, starting with a letter or digit. Every instance
    id is one."""
    return (
        isinstance(value, str) and len(value) <= MAX_LENGTH and _SAFE.fullmatch(value) is not None
    )
