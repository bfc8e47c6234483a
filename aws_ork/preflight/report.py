"""The lines ``aws_ork --check`` prints: a status column and a text."""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Status(enum.Enum):
    """How a check came out; the value is the line's first column."""

    OK = "ok  "
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Line:
    """One result line."""

    status: Status
    text: str
    #: a FAIL that the start refuses as a config error (exit 2), not a broken part (exit 1)
    config_error: bool = False

    def __str__(self) -> str:
        return f"{self.status.value} {self.text}"


def ok(text: str) -> Line:
    return Line(Status.OK, text)


def warn(text: str) -> Line:
    return Line(Status.WARN, text)


def fail(text: str) -> Line:
    return Line(Status.FAIL, text)


def config_fail(text: str) -> Line:
    """A FAIL that the start would refuse with exit 2: ``--check`` exits 2 too."""
    return Line(Status.FAIL, text, config_error=True)
