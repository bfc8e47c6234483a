"""The tally of failed AWS calls, by service and error code.

Counted where botocore errors are translated (``sqs/queue``, ``checks/ec2``,
``mirror/bucket``) and read by the metrics: a process-wide table at the bottom, so that the
stages need not import the metrics, which sit above them.
"""

from __future__ import annotations

import re
import threading
from collections import Counter

#: AWS error codes come from the endpoint: an odd one is bucketed, and the table is bounded.
_CODE = re.compile(r"[A-Za-z0-9_.]{1,64}")
_AWS_ERROR_SERIES = 100

_aws_errors: Counter[tuple[str, str]] = Counter()
_aws_lock = threading.Lock()


def count_aws_error(service: str, code: str) -> None:
    """Count one failed AWS call (called where botocore errors are translated)."""
    if not _CODE.fullmatch(code):
        code = "other"
    with _aws_lock:
        key = (service, code)
        if key not in _aws_errors and len(_aws_errors) >= _AWS_ERROR_SERIES:
            key = (service, "other")
        _aws_errors[key] += 1


def aws_errors() -> dict[tuple[str, str], int]:
    """A copy of the AWS error tally: {(service, code): count}."""
    with _aws_lock:
        return dict(_aws_errors)
