"""The launching actions aws_ork keeps alive, durably in StateDir (``lifecycle-waits``).

A restart must not give a waiting launch a fresh 30 minutes, nor forget when its next
heartbeat is due: the completer writes what it waits for (and what it gave up, so a returning
message is not waited for again) to one small file, rewritten whole (temp file + rename,
:func:`aws_ork.base.files.write_atomic`) when it changes, read back at start-up.

One JSON object per line (``json.dumps`` escapes every control character, so a hook or group
name from a message can never split a line). A line that is torn, not JSON, or whose fields
are not what Auto Scaling can send (a token of 1-64 characters of ``[A-Za-z0-9._:-]``, a hook
name of 1-255 and a group name of 1-1600 printable characters, an instance id, finite times)
is ignored. At most :data:`~aws_ork.defaults.HOOK_WAITS_LIMIT` lines are written: the waiting
actions first, then the most recent given-up ones.
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aws_ork.base.files import write_atomic
from aws_ork.base.ids import is_instance_id
from aws_ork.memory import read_lines

log = logging.getLogger(__name__)

#: its name in StateDir
LIFECYCLE_WAITS_FILE = "lifecycle-waits"

WAITING = "waiting"
GIVEN_UP = "given_up"

_TOKEN = re.compile(r"[A-Za-z0-9._:-]{1,64}")


@dataclass(frozen=True)
class SavedWait:
    """One line of the file: an action, when its wait began, when its next heartbeat is due,
    how many were sent, and whether it is still waited for (``WAITING``) or given up."""

    group: str
    hook: str
    token: str
    instance_id: str
    since: float  # wall-clock time (time.time) when the wait began
    due: float  # wall-clock time of the next heartbeat
    beats: int
    state: str

    def line(self) -> str:
        return (
            json.dumps(
                {
                    "token": self.token,
                    "group": self.group,
                    "hook": self.hook,
                    "instance": self.instance_id,
                    "since": round(self.since, 3),
                    "due": round(self.due, 3),
                    "beats": self.beats,
                    "state": self.state,
                },
                ensure_ascii=True,
                sort_keys=True,
            )
            + "\n"
        )


def _name(value: object, limit: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= limit and value.isprintable()


def _time(value: object) -> bool:
    return (
        isinstance(value, (int, float))
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value >= 0
    )


def storable(group: str, hook: str, token: str, instance_id: str) -> bool:
    """An action the file may hold (what Auto Scaling itself can send)."""
    return (
        _TOKEN.fullmatch(token) is not None
        and _name(hook, 255)
        and _name(group, 1600)
        and is_instance_id(instance_id)
    )


def _parse(text: str) -> SavedWait | None:
    try:
        doc: Any = json.loads(text)
    except ValueError:
        return None
    if not isinstance(doc, dict):
        return None
    token, group, hook = doc.get("token"), doc.get("group"), doc.get("hook")
    instance, since, due = doc.get("instance"), doc.get("since"), doc.get("due")
    beats, state = doc.get("beats"), doc.get("state")
    if not (
        isinstance(token, str)
        and isinstance(group, str)
        and isinstance(hook, str)
        and isinstance(instance, str)
        and storable(group, hook, token, instance)
    ):
        return None
    if not (
        _time(since)
        and _time(due)
        and isinstance(beats, int)
        and not isinstance(beats, bool)
        and 0 <= beats < 1_000_000
        and state in (WAITING, GIVEN_UP)
    ):
        return None
    assert isinstance(since, (int, float)) and isinstance(due, (int, float))
    return SavedWait(group, hook, token, instance, float(since), float(due), beats, str(state))


def load(path: Path) -> list[SavedWait]:
    """The waits the file holds, in file order (the last line of a token wins); torn or
    forged lines are skipped. OSError naming the file when it cannot be read."""
    found: dict[str, SavedWait] = {}
    skipped = 0
    for text in read_lines(path):
        saved = _parse(text)
        if saved is None:
            skipped += 1
            continue
        found.pop(saved.token, None)
        found[saved.token] = saved
    if skipped:
        log.warning("%s: %d damaged line(s) ignored", path, skipped)
    return list(found.values())


def save(path: Path, waits: Iterable[SavedWait], limit: int) -> None:
    """Rewrite the file with these waits (the first ``limit`` of them); OSError when it
    cannot be written (the old file is then left whole)."""
    lines = [saved.line() for saved, _ in zip(waits, range(limit), strict=False)]
    write_atomic(path, "".join(lines).encode("ascii"), 0o600)
