"""Who may send to the queue: ``aws_ork --check``'s reading of the queue's access policy.

Apart from the other checks because it is a small analyser of AWS's policy language (read
defensively, as any JSON may come back) with no AWS call of its own: it gets the policy text
and the config's AllowedTopicArns and UnsignedSources, and says OK, WARN or FAIL.
"""

from __future__ import annotations

import fnmatch
import json
from collections.abc import Iterator, Mapping
from typing import Any

from aws_ork.config import ANY_TOPIC
from aws_ork.preflight.report import Line, fail, ok, warn

#: Policy condition operators that admit only the values they name.
ADMITTING_OPERATORS = frozenset(
    {"arnequals", "arnlike", "stringequals", "stringlike", "stringequalsignorecase"}
)


def policy_lines(
    text: str | None, allowed_topics: tuple[str, ...], unsigned_sources: tuple[str, ...]
) -> Iterator[Line]:
    """Who may send to the queue, from its policy (AWS's JSON, read defensively).

    A statement lets *others* send when it allows sqs:SendMessage to everyone (``"*"``) or
    to a service principal, unless an ``aws:SourceArn`` condition names only allowed topics
    (or EventBridge rules, when ``eventbridge`` is an UnsignedSource): WARN. It lets
    *everyone* send when its principal is ``"*"`` and it has no condition at all: with
    UnsignedSources, anyone on the internet can then forge an unsigned launch: FAIL. Deny
    statements are not weighed (an Allow is judged by itself), so a WARN may be too careful,
    never too lenient. Without a policy only IAM principals of the queue's account can send.
    """
    if not text:
        yield ok("queue policy: none, only IAM principals of the queue's account can send")
        return
    try:
        policy = json.loads(text)
    except ValueError:
        yield warn(f"queue policy is not JSON; cannot tell who may send: {text[:80]!r}")
        return
    statements = policy.get("Statement", []) if isinstance(policy, dict) else []
    if isinstance(statements, dict):
        statements = [statements]
    open_to: list[str] = []
    open_to_everyone = False
    for index, statement in enumerate(statements if isinstance(statements, list) else []):
        if not isinstance(statement, dict) or not _allows_send(statement):
            continue
        who = _public_principal(statement)
        if who is None or _restricted_to_sources(statement, allowed_topics, unsigned_sources):
            continue
        name = statement.get("Sid") or f"#{index + 1}"
        open_to.append(f"{name} ({who})")
        if who == "*" and not statement.get("Condition"):
            open_to_everyone = True
    if open_to_everyone and unsigned_sources:
        yield fail(
            f"queue policy lets everyone send (statement {', '.join(open_to)}) and "
            f"UnsignedSources = {' '.join(unsigned_sources)}: anyone can forge an "
            f"unsigned launch. Allow only your topic or source (aws:SourceArn)"
        )
    elif open_to:
        yield warn(
            f"queue policy lets others than the allowed topics send (statement "
            f"{', '.join(open_to)}): add an aws:SourceArn condition naming the topic"
        )
    else:
        yield ok("queue policy: only the allowed sources and named IAM principals can send")


def _strings(value: Any) -> list[str]:
    """A policy field that may be a string or a list of strings, as a list."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [item for item in value if isinstance(item, str)]
    return []


def _allows_send(statement: Mapping[str, Any]) -> bool:
    """An Allow covering sqs:SendMessage (``sqs:*``, ``*``, ``sqs:Send*``, or NotAction
    leaving it in); action names are case-insensitive."""
    if str(statement.get("Effect", "")).lower() != "allow":
        return False
    send = "sqs:sendmessage"
    if "NotAction" in statement:
        return not any(
            fnmatch.fnmatchcase(send, pattern.lower())
            for pattern in _strings(statement["NotAction"])
        )
    return any(
        fnmatch.fnmatchcase(send, pattern.lower()) for pattern in _strings(statement.get("Action"))
    )


def _public_principal(statement: Mapping[str, Any]) -> str | None:
    """``"*"`` when the statement names everyone (``"*"``, ``{"AWS": "*"}``, a NotPrincipal),
    the service's name for a service principal, None for IAM principals (accounts, roles)."""
    if "NotPrincipal" in statement:
        return "*"
    principal = statement.get("Principal")
    if principal == "*":
        return "*"
    if not isinstance(principal, dict):
        return None
    if "*" in _strings(principal.get("AWS")):
        return "*"
    services = _strings(principal.get("Service"))
    return " ".join(services) if services else None


def _restricted_to_sources(
    statement: Mapping[str, Any], allowed_topics: tuple[str, ...], unsigned_sources: tuple[str, ...]
) -> bool:
    """True when an aws:SourceArn condition names only allowed topics, or EventBridge rules
    when eventbridge is an UnsignedSource. Only operators that admit what they name count: a
    ``...Not...`` operator admits everything else, and ``...IfExists`` admits a request
    without a source (any IAM principal's own call)."""
    conditions = statement.get("Condition")
    if not isinstance(conditions, dict):
        return False
    arns: list[str] = []
    for operator, tests in conditions.items():
        name = str(operator).lower().rpartition(":")[2]  # ForAnyValue:StringEquals too
        if not isinstance(tests, dict) or name not in ADMITTING_OPERATORS:
            continue
        for key, value in tests.items():
            if str(key).lower() == "aws:sourcearn":
                arns.extend(_strings(value))
    return bool(arns) and all(
        _expected_source(arn, allowed_topics, unsigned_sources) for arn in arns
    )


def _expected_source(
    arn: str, allowed_topics: tuple[str, ...], unsigned_sources: tuple[str, ...]
) -> bool:
    if arn in allowed_topics:
        return True
    if allowed_topics == (ANY_TOPIC,) and ":sns:" in arn and "*" not in arn:
        return True  # AllowedTopicArns = * (warned about already): any one topic will do
    return "eventbridge" in unsigned_sources and ":events:" in arn and "*" not in arn
