"""The reconcile sweep: what the event messages missed, found by asking EC2 about the keys.

Messages get lost (a queue purged, a subscription broken for an hour, a terminate that
arrived while the daemon was stopped and expired in the queue). Every SweepMinutes (and once
at start-up) the instance keys on the master, accepted and pending (only the ids this daemon
manages: those shaped like instance ids, and those MinionIdTemplate gave an instance, whose
instance is looked up), are looked up in EC2 in batches of 200 ids:

- the key of an instance EC2 reports gone (shutting-down, terminated) or does not know, on
  two sweeps in a row (EC2's API is eventually consistent: a brand-new instance can be "not
  found" for a moment), is deleted, as a terminate would delete it; but only a key aws_ork
  enrolled (:meth:`KeyStage.enrolled_here`): a key shaped like an instance id that aws_ork
  never accepted or pre-authorised is someone else's (a hand-accepted minion of another
  region or account, whose instance SQS_Region's EC2 cannot know) and is left alone;
- under key binding, the pending key of a running instance that passes every check a launch
  must pass (group, tags, and the fingerprint it published) is accepted, as its lost launch
  would have accepted it. Replay protection applies (an enrolled instance whose key was
  removed is not accepted again). Without key binding the sweep accepts nothing: a key
  presented now under the id of an instance up for days is "younger than the instance"
  whoever presented it, so freshness proves nothing here. Such a key is left pending (said
  once per key at INFO).

The sweep runs in the loop's thread between receives, so it never races a message about the
same key. It logs one line per change (prefixed ``sweep:``) and a summary per sweep;
``--dry-run`` says what it would do.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

from aws_ork.base.saltkeys import ACCEPTED, PENDING
from aws_ork.checks.ec2 import GONE_STATES, LIVE_STATES, Ec2Lookup, InstanceCheck
from aws_ork.keys.stage import KeyStage, named

log = logging.getLogger(__name__)


@dataclass
class SweepCounters:
    """Totals of the sweeps, counted apart from the messages."""

    runs: int = 0
    accepted: int = 0
    deleted: int = 0


class Sweep:
    """Runs when due; :meth:`run` raises InstanceLookupError when EC2 cannot be asked (the
    loop logs it and the next sweep tries again)."""

    def __init__(
        self,
        keys: KeyStage,
        lookup: Ec2Lookup,
        check: InstanceCheck,
        *,
        every_seconds: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.keys = keys  # the key stage: every key change is its
        self.lookup = lookup
        self.check = check
        self.every_seconds = every_seconds
        self._clock = clock
        self._next = clock()  # the first sweep at start-up
        self._gone_last_time: set[str] = set()
        #: (minion id, why) of the keys left alone that the last sweep said so about
        self._told: set[tuple[str, str]] = set()
        self.counters = SweepCounters()

    def due(self) -> bool:
        return self._clock() >= self._next

    def run(self) -> None:
        self._next = self._clock() + self.every_seconds
        keys = [
            (i, m, states)
            for i, m, states in self.keys.instance_keys()
            if states & {ACCEPTED, PENDING}
        ]
        wanted = {instance_id for instance_id, _, _ in keys}
        instances = self.lookup.get_many(wanted)
        gone_now: set[str] = set()
        accepted = deleted = foreign = 0
        told: set[tuple[str, str]] = set()
        for instance_id, minion_id, states in keys:
            instance = instances.get(instance_id)
            if instance is None or instance.state in GONE_STATES:
                what = "not found" if instance is None else instance.state
                if not self.keys.enrolled_here(instance_id, minion_id):
                    foreign += 1
                    self._once(
                        told,
                        minion_id,
                        "foreign",
                        "sweep: %s: EC2: %s, but aws_ork "
                        "did not enrol this key (accepted by hand? a minion of "
                        "another region or account?); left alone",
                        named(instance_id, minion_id),
                        what,
                    )
                    continue
                gone_now.add(minion_id)
                if minion_id in self._gone_last_time:
                    deleted += self.keys.sweep_delete(
                        instance_id, minion_id, f"EC2: {what} on two sweeps in a row"
                    )
                continue
            if PENDING in states and ACCEPTED not in states and instance.state in LIVE_STATES:
                if self.check.binding_tag is None:
                    self._once(
                        told,
                        minion_id,
                        "unbound",
                        "sweep: %s: pending key left "
                        "alone: without key binding the sweep accepts no key (nothing "
                        "proves whose it is; KeyBinding = tag accepts the key the "
                        "instance published)",
                        named(instance_id, minion_id),
                    )
                    continue
                verdict = self.check.judge_launch(instance_id, instance)
                accepted += self.keys.sweep_accept(instance_id, minion_id, verdict)
        self._gone_last_time = gone_now
        self._told = told  # a key gone or changed is said again if it comes back
        self.counters.runs += 1
        self.counters.accepted += accepted
        self.counters.deleted += deleted
        log.info(
            "sweep: %d instance keys looked up in EC2 (%d found): %d accepted, %d deleted, "
            "%d gone once (deleted at the next sweep if still gone), %d not enrolled by "
            "aws_ork (left alone)",
            len(wanted),
            len(instances),
            accepted,
            deleted,
            len(gone_now) - deleted,
            foreign,
        )

    def _once(
        self, told: set[tuple[str, str]], minion_id: str, why: str, text: str, *args: object
    ) -> None:
        """Log a key left alone at INFO the first time a sweep finds it so, not every sweep
        (every few minutes, for as long as the key stays)."""
        told.add((minion_id, why))
        if (minion_id, why) not in self._told:
            log.info(text, *args)
