"""Tunables, in one place, each with the reason for its value."""

from __future__ import annotations

#: SQS long poll: the longest wait SQS allows, so an idle daemon costs one request per 20 s.
WAIT_TIME_SECONDS = 20
#: The most messages one ReceiveMessage may return.
MAX_MESSAGES = 10
#: ``--once`` stops at the first empty receive; a short long-poll still asks every SQS
#: server (a zero wait samples only some and can come back empty while messages exist).
ONCE_WAIT_TIME_SECONDS = 2

#: A launch whose minion key is not there yet is retried soon, not after the queue's whole
#: visibility timeout: the delay doubles per receive, from RETRY_BASE up to RETRY_CAP seconds.
RETRY_BASE_SECONDS = 2
RETRY_CAP_SECONDS = 60

#: Bodies larger than SQS allows (256 KiB) are never parsed.
MAX_BODY_BYTES = 256 * 1024

#: botocore timeouts: the read timeout must outlast the long poll.
CONNECT_TIMEOUT_SECONDS = 5
READ_TIMEOUT_SECONDS = WAIT_TIME_SECONDS + 10
#: botocore retries (standard mode: backoff with jitter, throttling errors included).
MAX_ATTEMPTS = 5

#: After a failure to reach SQS, wait this long before trying again, doubling up to the cap.
RECONNECT_BASE_SECONDS = 1
RECONNECT_CAP_SECONDS = 60


def backoff(attempt: int, base: float, cap: float) -> float:
    """The wait before retry number ``attempt`` (1-based): base, 2*base, 4*base, ... <= cap."""
    return min(cap, base * (1 << (max(1, attempt) - 1)))


def retry_delay(receive_count: int) -> int:
    """Visibility delay for the n-th failed attempt (1-based): 2, 4, 8, ... capped at 60 s."""
    return int(backoff(receive_count, RETRY_BASE_SECONDS, RETRY_CAP_SECONDS))

#: A stopping daemon gives the last S3 mirror run this long; what is left is mirrored at the
#: next start (the start-up reconciliation), and ``--once`` exits 1 to say so.
FINAL_MIRROR_SECONDS = 10

#: S3 mirror debounce: a burst of key changes (a scale-out) is mirrored once it has been quiet
#: this long, and at the latest this long after its first change, not once per message. The
#: changes are in the journal meanwhile; 10 s (not 2) keeps a long drain from paying a mirror
#: run every other batch (drain benchmark with the mirror: 0.76 -> 0.86 of the bare loop).
MIRROR_DEBOUNCE_SECONDS = 0.5
MIRROR_DEBOUNCE_MAX_SECONDS = 10.0
#: A failed mirror run is retried after 1, 2, 4, ... seconds up to this cap: short enough
#: that the bucket catches up soon after an S3 outage ends.
MIRROR_RETRY_CAP_SECONDS = 30
#: Parallel uploads when many files differ (first mirror, reconciliation after drift);
#: below botocore's default connection pool of 10.
MIRROR_UPLOAD_THREADS = 8
