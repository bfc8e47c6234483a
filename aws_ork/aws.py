"""boto3 clients made one way for the whole program.

No ``endpoint_url`` is passed: botocore then honours ``AWS_ENDPOINT_URL`` and the
per-service ``AWS_ENDPOINT_URL_<SERVICE>`` variables, so any AWS-compatible endpoint works
without a code change. Retries use botocore's standard mode (exponential backoff with
jitter, throttling included).
"""

from __future__ import annotations

from typing import Any

import boto3
import botocore.config
import botocore.exceptions
import botocore.parsers

from aws_ork import defaults

#: Errors that mean "AWS could not be reached or refused": translate these at each edge.
#: ResponseParserError (an answer botocore cannot read, e.g. an HTML error page from a proxy)
#: derives from neither BotoCoreError nor ClientError.
AWS_ERRORS = (
    botocore.exceptions.BotoCoreError,
    botocore.exceptions.ClientError,
    botocore.parsers.ResponseParserError,
)


def make_client(service: str, region: str, *, max_attempts: int = defaults.MAX_ATTEMPTS) -> Any:
    """A client for ``service`` in ``region`` with our timeouts and retry policy."""
    config = botocore.config.Config(
        connect_timeout=defaults.CONNECT_TIMEOUT_SECONDS,
        read_timeout=defaults.READ_TIMEOUT_SECONDS,
        retries={"mode": "standard", "max_attempts": max_attempts},
    )
    # a session per client: boto3's default session is not thread-safe to create clients from
    session: Any = boto3.session.Session()
    return session.client(service, region_name=region, config=config)


def error_code(exc: BaseException) -> str:
    """The AWS error code of a ClientError, else the exception's class name."""
    if isinstance(exc, botocore.exceptions.ClientError):
        return str(exc.response.get("Error", {}).get("Code", "ClientError"))
    return type(exc).__name__
