"""The value parsers of the config options: each takes the raw string (stripped) and returns
the typed value or raises ValueError with the reason, which config.py turns into a
ConfigError naming the file, the option and the value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from aws_ork.base.naming import parse_template

_TRUE = {"1", "yes", "true", "on"}
_FALSE = {"0", "no", "false", "off"}
_LIST_SPLIT = re.compile(r"[\s,]+")


@dataclass(frozen=True)
class BucketUrl:
    """``s3://bucket/prefix/`` split into its parts; ``prefix`` is '' or ends in '/'."""

    bucket: str
    prefix: str

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


# --- value parsers: each takes the raw string and returns the value or raises ValueError ---


def _optional(parse: Callable[[str], Any]) -> Callable[[str], Any]:
    """Empty (or 0.4.5's literal ``None``) means unset."""

    def wrapped(raw: str) -> Any:
        if raw == "" or raw.lower() == "none":
            return None
        return parse(raw)

    return wrapped


def _bool(raw: str) -> bool:
    low = raw.lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    raise ValueError("is not a boolean (use true/false, yes/no, on/off, 1/0)")


def _number(unit: str, high: float, low_text: str = "0") -> Callable[[str], float]:
    """A parser for a number of ``unit`` from 0 to ``high`` (NaN refused)."""

    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"is not a number of {unit}") from None
        if not 0 <= value <= high or value != value:
            raise ValueError(f"must be between {low_text} and {high:g} {unit}")
        return value

    return parse


_seconds = _number("seconds", 3600)
_minutes = _number("minutes", 1440, "0 (only at start-up)")
#: HealthMirrorSeconds: up to a day; a mirror failing that long needs a person anyway
_health_seconds = _number("seconds", 86400)


def _megabytes(raw: str) -> int:
    """A whole number of MiB from 0 (no cap) to 1 TiB."""
    if not re.fullmatch(r"[0-9]{1,8}", raw) or int(raw) > 1024 * 1024:
        raise ValueError("is not a whole number of MB from 0 (no cap) to 1048576")
    return int(raw)


def _region(raw: str) -> str:
    if not re.fullmatch(r"[a-z]{2,}(-[a-z]+)+-\d+", raw):  # eusc-de-east-1 too
        raise ValueError("is not an AWS region name (like us-west-2)")
    return raw


def _queue_name(raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9_-]{1,80}(\.fifo)?", raw):
        raise ValueError("is not an SQS queue name (1-80 of A-Z a-z 0-9 _ -)")
    return raw


def _queue_url(raw: str) -> str:
    parsed = urlparse(raw)
    if parsed.scheme not in ("http", "https") or not parsed.netloc or not parsed.path.strip("/"):
        raise ValueError("is not a queue URL (https://sqs.REGION.amazonaws.com/ACCOUNT/NAME)")
    return raw


def _bucket_url(raw: str) -> BucketUrl:
    match = re.fullmatch(r"s3://([a-z0-9][a-z0-9.-]{1,61}[a-z0-9])(/.*)?", raw)
    if not match:
        raise ValueError("is not an S3 URL (s3://bucket/prefix/)")
    prefix = (match.group(2) or "").lstrip("/")
    if prefix and not prefix.endswith("/"):
        prefix += "/"
    if "//" in prefix:
        raise ValueError("has an empty path segment in its prefix")
    return BucketUrl(match.group(1), prefix)


def _sse(raw: str) -> str:
    for choice in ("AES256", "aws:kms"):
        if raw.lower() == choice.lower():
            return choice
    raise ValueError("must be none, AES256 or aws:kms")


def _kms_key_id(raw: str) -> str:
    if not re.fullmatch(r"[A-Za-z0-9:/_.-]{1,2048}", raw):
        raise ValueError("is not a KMS key id, key ARN, alias/NAME or alias ARN")
    return raw


def _acl(raw: str) -> str:
    if raw.lower() != "bucket-owner-full-control":
        raise ValueError("must be bucket-owner-full-control or none")
    return "bucket-owner-full-control"


#: LogFormat: ``text`` for people, ``json`` (one object per line) for log shippers.
LOG_FORMATS = ("text", "json")


def _log_format(raw: str) -> str:
    if raw.lower() not in LOG_FORMATS:
        raise ValueError(f"must be {' or '.join(LOG_FORMATS)}")
    return raw.lower()


def _path(raw: str) -> Path:
    if not raw:
        raise ValueError("is empty")
    if "\0" in raw:
        raise ValueError("contains a NUL character")
    try:
        return Path(raw).expanduser()
    except RuntimeError:  # ~user that does not exist, or no home directory
        raise ValueError("starts with ~ but that home directory is unknown") from None


def _words(raw: str) -> tuple[str, ...]:
    return tuple(word for word in _LIST_SPLIT.split(raw) if word)


#: AllowedTopicArns = * : any topic (the explicit, logged opt-out)
ANY_TOPIC = "*"


def _star_or(pattern: str, item: str, items: str, star: str) -> Callable[[str], tuple[str, ...]]:
    """A parser for a list of ``item`` values matching ``pattern``, or ``*`` alone (``star``);
    mixing the two is refused: it says something the operator cannot have meant."""

    def parse(raw: str) -> tuple[str, ...]:
        words = _words(raw)
        if "*" in words:
            if len(words) > 1:
                raise ValueError(
                    f"mixes * with {items}; use * alone ({star}) or only {items.split()[-1]}"
                )
            return words
        for word in words:
            if not re.fullmatch(pattern, word):
                raise ValueError(f"has {word!r}, which is not {item}")
        return words

    return parse


_topic_arns = _star_or(
    r"arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_.-]+",
    "an SNS topic ARN",
    "topic ARNs",
    "any topic",
)


#: Message sources that carry no signature (see aws_ork.checks.source); UnsignedSources names them.
UNSIGNED_SOURCES = ("raw", "hook", "eventbridge")


def _unsigned_sources(raw: str) -> tuple[str, ...]:
    names = tuple(word.lower() for word in _words(raw))
    for name in names:
        if name not in UNSIGNED_SOURCES:
            raise ValueError(f"has {name!r}; use any of {', '.join(UNSIGNED_SOURCES)}")
    return names


def _tags(raw: str) -> tuple[tuple[str, str], ...]:
    pairs = []
    for word in _words(raw):
        key, sep, value = word.partition("=")
        if not sep or not key:
            raise ValueError(f"has {word!r}; write tags as Key=Value")
        pairs.append((key, value))
    return tuple(pairs)


def _template(raw: str) -> str:
    return parse_template(raw).text


def _address(raw: str) -> tuple[str, int]:
    host, sep, port = raw.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError("is not host:port")
    return (host.strip("[]") or "127.0.0.1", int(port))


#: LifecycleHooks = * : complete the actions of every hook whose messages reach the queue
ANY_HOOK = "*"


#: hook names are 1-255 characters of ``[A-Za-z0-9_./-]``, as Auto Scaling allows; empty
#: completes none
_hook_names = _star_or(
    r"[A-Za-z0-9_./-]{1,255}", "a lifecycle hook name", "hook names", "every hook"
)


def _key_binding(raw: str) -> str:
    if raw.lower() not in ("off", "tag"):
        raise ValueError("must be off or tag")
    return raw.lower()


def _tag_key(raw: str) -> str:
    if not 0 < len(raw) <= 128 or raw.lower().startswith("aws:") or not raw.isprintable():
        raise ValueError("is not an EC2 tag key you can set (1-128 characters, not aws:...)")
    return raw
