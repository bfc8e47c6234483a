"""No replay: a signed envelope already handled is not acted on again.

Envelopes are easy to capture (an email-json or HTTPS subscriber of the topic, a dead-letter
queue) and a signature never expires. Three things stop a captured one from being sent again:

- this check: the SNS ``MessageId`` (inside the envelope, so covered by the signature; a
  re-send through SQS gets a new SQS id but keeps it) of every finished envelope is kept in
  StateDir for as long as SQS could keep a copy (:mod:`aws_ork.memory`);
- the signature check refuses an envelope whose Timestamp is older than the queue could have
  kept it;
- the key stage never enrols an instance twice: once its key was accepted, a later launch
  (replayed, or genuine but late) accepts nothing after someone removed that key
  (:meth:`aws_ork.keys.manager.KeyManager.accept`).

A message only deferred for a retry is not finished, so it is handled when it comes back.
"""

from __future__ import annotations

from aws_ork.base.text import shorten
from aws_ork.checks.verdict import Verdict
from aws_ork.events import Event, Source
from aws_ork.memory import IdMemory, valid_id


class ReplayCheck:
    """Refuses an SNS envelope whose MessageId was already finished."""

    #: the reason code of its failures in the metrics (a fixed word, never message text)
    code = "replay"

    def __init__(self, finished: IdMemory) -> None:
        self.finished = finished

    def __call__(self, event: Event) -> Verdict:
        if event.source is not Source.SNS:
            return Verdict.passed()
        if not valid_id(event.message_id):
            return Verdict.refused(f"SNS MessageId {shorten(event.message_id)} is not usable")
        if event.message_id in self.finished:
            return Verdict.refused(f"SNS message {event.message_id} was already handled: a replay")
        return Verdict.passed()
