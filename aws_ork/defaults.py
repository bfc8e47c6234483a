"""Tunables, in one place, each with the reason for its value."""

from __future__ import annotations

#: SQS long poll: the longest wait SQS allows, so an idle daemon costs one request per 20 s.
WAIT_TIME_SECONDS = 20
#: The most messages one ReceiveMessage may return.
MAX_MESSAGES = 10
#: Receive batches taken from the queue ahead of the loop at most (sqs/receiver.py): two
#: keep receives back to back during a backlog (one waiting while the next is in flight)
#: without pulling a backlog out of the queue faster than it is handled.
RECEIVE_AHEAD = 2
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
#: While SQS stays unreachable, one ERROR line this often (the first failure is logged at once,
#: the end of the outage as INFO): an hour-long outage is a page of log, not hundreds of lines.
OUTAGE_LOG_SECONDS = 60


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
#: The StateDir memories (replay, enrolment, minion ids) are compared with the mirror this
#: often (a local stat) and uploaded when they changed: at most one PUT per file per interval
#: (and at each reconciliation and clean stop). A master lost in between forgets at most this.
MIRROR_MEMORY_SECONDS = 60.0
#: Parallel uploads when many files differ (first mirror, reconciliation after drift);
#: below botocore's default connection pool of 10.
MIRROR_UPLOAD_THREADS = 8

#: SQS keeps a message at most 14 days: no message older than that can arrive from the queue.
SQS_MAX_RETENTION_SECONDS = 14 * 24 * 3600
#: The SNS MessageIds of finished signed envelopes are kept as long as SQS could keep a copy
#: of one, at most this many (a few tens of MB of memory at the most).
FINISHED_MESSAGES_LIMIT = 200_000
#: Instances whose keys were accepted once: a launch, an EventBridge "running" after a
#: stop/start, or a replay never enrols them again. Instances live for months; the limit
#: bounds the memory (the oldest enrolments are forgotten first).
ENROLLED_KEEP_SECONDS = 400 * 24 * 3600
ENROLLED_LIMIT = 200_000
#: MinionIdTemplate: instances whose minion id is remembered (until their key is deleted).
MINION_NAMES_LIMIT = 200_000

#: The largest SNS signing certificate read, from the network or CertCacheDir (a real one is
#: about 2 KB; a bigger answer is no certificate, and reading it whole would let a hostile
#: endpoint fill memory).
MAX_CERT_BYTES = 64 * 1024
#: One certificate fetch: AWS answers in well under a second; a hung fetch holds the loop, so
#: it is cut short and the message retried (see CERT_FAILURE_* below).
FETCH_TIMEOUT_SECONDS = 5.0
#: --restore: characters of an untrusted value (an object key, a link target) shown in a log
#: line or a refusal, enough to recognise it without flooding the terminal.
RESTORE_SHOWN_CHARS = 120

#: SNS signing certificates that cannot be fetched (checks/certstore.py). A fetch that fails at
#: the network level (an invented region is NXDOMAIN, a firewall drops packets) may be an AWS
#: blip, so the message is retried; but it must not be retried for ever, or a flood of such
#: messages comes back every minute, each paying a fetch timeout, and starves real launches.
#: A URL that failed this many times is refused for good (the message is deleted).
CERT_FAILURE_LIMIT = 3
#: After its n-th failure a URL is not fetched again for BACKOFF * 2**(n-1) seconds: messages
#: naming it are answered "retry" at once, with no network call. With LIMIT 3 the failures then
#: span at least 60 + 120 s = 3 minutes, so a short AWS outage does not reject real launches.
CERT_FAILURE_BACKOFF_SECONDS = 60.0
#: A failure is remembered this long after the URL's last failure: a URL that reached the limit
#: is refused without a fetch for this long, then gets fresh attempts; failures further apart
#: than this do not add up. Must exceed the longest back-off window (120 s with the above).
CERT_FAILURE_MEMORY_SECONDS = 900.0
#: At most this many URLs are remembered (about 0.6 KiB each, 2.5 MiB in all); beyond, the
#: least recently failed is forgotten, so a flood of made-up URLs cannot grow memory. Forgetting
#: a URL only grants it fresh attempts; to churn the table a flood must fail more than SIZE
#: fetches per MEMORY seconds, i.e. (the loop checks one message at a time) each fetch must fail
#: within about 0.2 s: the expensive kind (a timeout) cannot churn it. Checking the certificate's
#: region (allowed_regions) stops invented regions without any memory at all.
CERT_FAILURE_TABLE_SIZE = 4096

#: With a maximum age for SNS envelopes (``SignatureVerifier(max_age_seconds=...)``), a signed
#: Timestamp may also lie this far in the future: clocks of AWS and the master may disagree a
#: little, but an envelope from far in the future is no replay we should honour later either.
SNS_TIMESTAMP_SKEW_SECONDS = 300.0

#: Key binding: while launches wait for their bound key, their key files are looked at this
#: often (two stat calls per waiting launch), so the key is accepted well within a second of
#: the minion presenting it.
ARRIVAL_POLL_SECONDS = 0.2
#: ... for at most this long per launch; its message's own retries go on meanwhile.
ARRIVAL_WAIT_SECONDS = 30 * 60
#: Key binding: a launch whose bound key was not presented after this many receives (retries
#: up to 60 s apart: about half an hour) is given up, with a WARNING line.
BOUND_KEY_ATTEMPTS = 35
#: Key binding: impostor keys (minion id, fingerprint) whose SECURITY line was written, at
#: most; an impostor presents its key as often as it likes, the line is written once.
IMPOSTORS_REMEMBERED = 10_000
#: Key binding: seconds an id stays watched after its bound key was accepted. Salt's auth
#: fetches the id's key and, finding none, stores the presented key as pending a few awaits
#: (executor hops) later, deleting an accepted key written in between; on a loaded master
#: those hops can take seconds, two minutes is far beyond them (and costs two stat calls per
#: ARRIVAL_POLL_SECONDS per accepted id).
BOUND_GUARD_SECONDS = 120.0

#: Lifecycle hooks: a waiting launching action gets a heartbeat each time this fraction of its
#: hook's HeartbeatTimeout has passed since the last one (the first at once): half leaves
#: time for a failed heartbeat to be retried before the action lapses.
HEARTBEAT_FRACTION = 0.5
#: How often the heartbeat thread looks for due heartbeats.
HEARTBEAT_TICK_SECONDS = 1.0
#: A failed heartbeat is tried again this much later.
HEARTBEAT_RETRY_SECONDS = 5.0
#: AWS's smallest HeartbeatTimeout: assumed when the hook's own cannot be learnt.
MIN_HEARTBEAT_TIMEOUT_SECONDS = 30
#: A launching action whose key is not accepted after this long (the key-binding bound,
#: ARRIVAL_WAIT_SECONDS, too) gets no more heartbeats: one WARNING line, and the hook's own
#: HeartbeatTimeout and DefaultResult decide (ABANDON terminates the instance).
HOOK_WAIT_SECONDS = 30 * 60
#: Tokens answered or given up in this run, remembered so their returning messages are
#: deleted (a few MB at most).
ENDED_ACTIONS_LIMIT = 10_000

#: MetricsAddress (runtime/metrics.py) is plain HTTP that anyone who reaches it may open.
#: Connections served at once: Prometheus and a health probe need one or two each; beyond,
#: the connection open longest is closed for the newcomer, so slow clients cannot hold the
#: server (a request that arrives whole is answered at once, before 32 newer ones can
#: arrive) and the server never holds more than this many descriptors.
METRICS_MAX_CONNECTIONS = 32
#: A connection's whole life (request read, answer sent), however slowly its bytes come: a
#: scrape on loopback takes milliseconds, Prometheus's own scrape timeout is 10 s.
METRICS_REQUEST_SECONDS = 5.0
#: Request line and headers together (a GET of /metrics from Prometheus is about 300 bytes);
#: a longer request is dropped unread.
METRICS_REQUEST_BYTES = 8192
#: While accept() fails for want of descriptors or memory (EMFILE, ENFILE), asyncio stops
#: accepting for 1 s each time (never a busy loop); one WARNING line this often at most.
METRICS_ACCEPT_WARNING_SECONDS = 60.0

#: ArchiveDir: each archived file counts at least this much against ArchiveMaxMB (besides its
#: real blocks): one block of ext4/XFS, so a file system that reports no blocks for tiny files
#: (inline data) still caps the number of files, at ArchiveMaxMB x 256, and with it the
#: inodes and the archive's memory (about 200 bytes per file).
ARCHIVE_FILE_BYTES = 4096

#: Lifecycle waits in StateDir/lifecycle-waits: at most this many lines (waiting actions
#: first, then the newest given-up ones), a few hundred KB at most.
HOOK_WAITS_LIMIT = 2_000
#: Auto Scaling ends any lifecycle action after 48 hours (or 100 heartbeat timeouts): a
#: given-up action is remembered that long, so its returning message is not waited for again.
LIFECYCLE_ACTION_MAX_SECONDS = 48 * 3600


# --- MetricsAddress's log lines (runtime/metrics.py).

#: A request's log line (request line, status) is cut to this length: a GET of /metrics is
#: far shorter, and whoever reaches the port cannot write long lines into the log.
METRICS_LOG_LINE_LIMIT = 300

# --- ArchiveDir's names (sqs/archive.py).

#: Longest folder name (SNS topic names are up to 256 characters) and message-id part: well
#: within a file name's 255 bytes with the timestamp, and a listing people can read.
ARCHIVE_MAX_FOLDER_CHARS = 100
ARCHIVE_MAX_ID_CHARS = 100

# --- The launch records of checks/terminations.py.

#: Prune at the first record of a run, then at most this often: a prune lists the whole
#: directory, and records live 14 days, so an hourly prune keeps at most an hour's records
#: past their age at the cost of one listing an hour.
TERMINATIONS_PRUNE_SECONDS = 3600

# --- The EC2 check (checks/ec2.py).

#: A pending key may be this much older than the instance's LaunchTime (clocks of the master
#: and of EC2 differ a little); anything older was there before the instance existed.
KEY_CLOCK_SKEW_SECONDS = 60
#: KeyBinding = tag: how many receives of a launch whose instance has not tagged itself with
#: its key's fingerprint yet before it is refused (retries 2, 4, 8 ... 60 s apart: about 8
#: minutes, time for a slow boot; a lifecycle hook keeps the instance waiting meanwhile).
BINDING_TAG_ATTEMPTS = 12
#: KeyBinding = tag, key binding by key: while launches wait for their instance's key tags,
#: one batched DescribeInstances for all of them every this many seconds (checks/keytags.py).
#: The instance publishes its key just before salt-minion starts, and the minion's first
#: authentication comes about a second later: the key must be accepted by then, or the
#: minion waits Salt's acceptance_wait_time (10 s) for its retry. Two calls a second while
#: instances boot, none when nothing waits: far below EC2's DescribeInstances rate limit.
KEY_TAG_POLL_SECONDS = 0.5
#: How long the key tag watcher looks for a launch's key tags after its last receive (the
#: message itself is asked again with backoff for about as long: BINDING_TAG_ATTEMPTS).
KEY_TAG_WAIT_SECONDS = 8 * 60
#: The accepted-keys index (keys/index.py) re-reads the key store on a miss at most this
#: often: a key accepted by someone else in the last minute may not be known to it yet.
ACCEPTED_INDEX_SECONDS = 60
#: How many receives of a message for an instance EC2 does not know before that is final
#: (a launch is then rejected, a terminate honoured).
NOT_FOUND_ATTEMPTS = 5

# --- /healthz's loop bound (loop.py).

#: /healthz is unhealthy after this many poll intervals (long poll + PollPause) without a
#: completed receive: one slow or failed receive is normal, three in a row are not.
HEALTH_POLLS = 3

# --- ``--check`` (preflight.py).

#: The receiver long-polls for the next batch while one is handled: a message whose visibility
#: timeout ends before it is finished comes back in that poll (SQS's default is 30 s).
MIN_VISIBILITY_TIMEOUT = 30

# --- Restoring the StateDir memories (mirror/memories.py).

#: The largest memory object a restore reads: a full memory (200,000 lines of at most
#: 14 + 1 + 128 + 1 + 128 + 1 characters) with room for the dead lines a compaction leaves.
MEMORY_MAX_BYTES = 64 * 1024 * 1024

# --- SaltEvents, the reactor events (keys/reactor.py).

#: Connecting to the master's event socket: a local socket answers in microseconds, so a
#: quarter second only ever elapses when the master is down (Salt's default is 1 s).
REACTOR_CONNECT_TIMEOUT_MS = 250
#: After a failure, events are dropped without trying for this long: a down master costs a
#: decision at most one connection timeout per this period.
REACTOR_RETRY_SECONDS = 10.0
#: A bus that stays down (or a queue that stays full) is reported as a WARNING this often;
#: DEBUG in between.
REACTOR_WARN_EVERY_SECONDS = 600.0
#: Events waiting for the worker thread, at most: a bus that hangs (the master's event
#: publisher wedged) costs memory, not the loop's time: about 1.5 KiB an event (measured, a
#: few tags), 26 KiB with EC2's most and longest tags, so 1.5 MB, 26 MB at the very worst.
#: A working bus fires an event in about a millisecond, faster than the loop decides (a
#: 10-message batch takes tens of milliseconds), so the queue stays short.
REACTOR_QUEUE_LIMIT = 1_000
#: At stop, the queued events get this long, in all, to be fired; what is left is dropped.
REACTOR_CLOSE_SECONDS = 3.0
#: A decision's reason is cut to this length.
REACTOR_REASON_LIMIT = 500
#: Any other text value (outcome, source, event name, message id), at most.
REACTOR_TEXT_LIMIT = 200
#: Launches remembered for the ``accepted`` event that follows them (group, facts, message):
#: one entry per instance waiting for its key.
REACTOR_CONTEXT_LIMIT = 10_000


def receives_within(seconds: float) -> int:
    """How many times a message retried with :func:`retry_delay` is received until ``seconds``
    have passed since its first receive: the receive at or after that time included (the
    one that finds the bound reached and deletes it). Receive k comes, at the earliest, the
    sum of the first k-1 delays after the first: 2 + 4 + 8 + 16 + 32 = 62 s, then 60 s each,
    so for HOOK_WAIT_SECONDS (1,800 s) the 35th receive (62 + 29 * 60 = 1,802 s) is the last.
    """
    count, elapsed = 1, 0
    while elapsed < seconds:
        elapsed += retry_delay(count)
        count += 1
    return count


#: The most receives a waiting launch's message can take before it is deleted: the
#: lifecycle give-up bound (HOOK_WAIT_SECONDS) and key binding's BOUND_KEY_ATTEMPTS. The
#: queue's redrive maxReceiveCount must be at least this (tests/test_cloudformation.py checks
#: the template), or the message reaches the dead-letter queue before its bound.
WAIT_RECEIVES = max(receives_within(HOOK_WAIT_SECONDS), BOUND_KEY_ATTEMPTS)
