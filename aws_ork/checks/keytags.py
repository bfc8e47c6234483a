"""Key binding by key, fast: find an instance's key tags within a second of their writing.

A launch usually arrives while its instance still boots: the instance publishes its key on
its tags (data/instance/aws_ork-bind-minion.sh) only once user data runs, just before
salt-minion starts, and the minion authenticates about a second later. The launch's message
is retried with backoff (2, 4, 8 ... s), far too slow: the key must be accepted before that
first authentication, or the minion waits Salt's ``acceptance_wait_time`` (10 s) for its
retry. So while launches wait for their tags, a thread of its own asks EC2 about all of them
in one batched ``DescribeInstances`` every :data:`~aws_ork.defaults.KEY_TAG_POLL_SECONDS`
(none when nothing waits), and judges what it found with the launch check itself
(:meth:`~aws_ork.checks.ec2.InstanceCheck.judge_launch`: the group and tag filters, the
minion id, the key tags). A launch that passes with a published key is handed on (the key
stage stores the key as accepted); one refused for good is dropped (its message is refused
at its next receive). A launch is looked for :data:`~aws_ork.defaults.KEY_TAG_WAIT_SECONDS`
after its message's last receive.

The thread only looks: it changes no key itself.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from aws_ork import defaults
from aws_ork.checks.verdict import Verdict

log = logging.getLogger(__name__)

#: (instance id) -> what EC2 says, for many ids in one call (Ec2Lookup.get_many)
LookupMany = Callable[[Collection[str]], Mapping[str, Any]]
#: (instance id, what EC2 said) -> the launch verdict (InstanceCheck.judge_launch)
Judge = Callable[[str, Any], Verdict]
#: (instance id, its passing verdict with the published key) -> handled (stop looking)?
OnPublished = Callable[[str, Verdict], bool]


class KeyTagWatcher:
    """Launches waiting for their instance's key tags, and the thread that looks."""

    def __init__(
        self,
        lookup_many: LookupMany,
        judge: Judge,
        *,
        interval: float = defaults.KEY_TAG_POLL_SECONDS,
        wait_seconds: float = defaults.KEY_TAG_WAIT_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._lookup_many = lookup_many
        self._judge = judge
        self.interval = interval
        self.wait_seconds = wait_seconds
        self._clock = clock
        self._cond = threading.Condition()
        self._waiting: dict[str, float] = {}  # instance id -> look until (clock)
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._on_published: OnPublished | None = None
        self._failing = False  # EC2 could not be asked: said once until it answers again

    def start(self, on_published: OnPublished) -> None:
        self._on_published = on_published
        self._thread = threading.Thread(target=self._run, name="key-tags", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        with self._cond:
            self._stopping = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def watch(self, instance_id: str) -> None:
        """Look for this instance's key tags (again: the bound starts anew)."""
        with self._cond:
            self._waiting[instance_id] = self._clock() + self.wait_seconds
            self._cond.notify_all()

    def drop(self, instance_id: str) -> None:
        """Stop looking (the launch was refused, or handled)."""
        with self._cond:
            self._waiting.pop(instance_id, None)

    def waiting(self) -> frozenset[str]:
        with self._cond:
            return frozenset(self._waiting)

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._stopping and not self._waiting:
                    self._cond.wait()
                if self._stopping:
                    return
                now = self._clock()
                for instance_id in [i for i, until in self._waiting.items() if until < now]:
                    del self._waiting[instance_id]
                    log.info(
                        "%s: no key tags after %d s; the launch's own retries go on",
                        instance_id,
                        self.wait_seconds,
                    )
                waiting = sorted(self._waiting)
            if waiting:
                self.look(waiting)
            with self._cond:
                if self._cond.wait_for(lambda: self._stopping, self.interval):
                    return

    def look(self, instance_ids: Collection[str]) -> None:
        """One batched look at these instances (the thread's step; tests call it)."""
        try:
            found = self._lookup_many(instance_ids)
        except Exception as exc:  # throttled, unreachable: the next interval asks again
            if not self._failing:
                log.warning("key binding: looking for key tags failed (%s); retrying", exc)
            self._failing = True
            return
        self._failing = False
        for instance_id in instance_ids:
            instance = found.get(instance_id)
            if instance is None:
                continue  # not known to EC2 yet (eventually consistent)
            try:
                self._one(instance_id, instance)
            except Exception:  # the message path retries; this thread must go on
                log.error("%s: handling the key tags failed", instance_id, exc_info=True)

    def _one(self, instance_id: str, instance: Any) -> None:
        verdict = self._judge(instance_id, instance)
        if verdict.ok and verdict.published is not None:
            assert self._on_published is not None
            if self._on_published(instance_id, verdict):
                self.drop(instance_id)
        elif verdict.ok or not verdict.retry:
            # only a fingerprint (its message's binding takes it), or refused for good (its
            # message says why at its next receive)
            self.drop(instance_id)
