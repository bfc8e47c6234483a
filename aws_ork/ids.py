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
