"""A check that answers what a test tells it to (a :class:`aws_ork.checks.Check`)."""

from __future__ import annotations

from dataclasses import dataclass

from aws_ork.checks import Verdict
from aws_ork.events import Event


@dataclass
class Said:
    """Answers ``verdict`` to every event, as the check named ``code`` would."""

    verdict: Verdict
    code: str = "instance"

    def __call__(self, event: Event) -> Verdict:
        return self.verdict
