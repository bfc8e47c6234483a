"""MinionIdTemplate: the minion id made from an instance, and what makes an id safe.

The default, ``{instance_id}``, makes the minion id the instance id: unique, issued by AWS,
never reused. A template may instead build it from what the instance's DescribeInstances said
(``{tag:KEY}``, ``{asg_name}``, ``{private_dns_name}``) with literal text around the fields.
Those values are not ours: a tag can be set by whoever may tag the instance. So the result is
checked before it reaches Salt or a path (:func:`is_minion_id`), and who may hold an id is
decided by the key stage from the durable mapping instance -> minion id
(:class:`aws_ork.memory.MinionNames`): an id that belongs to another instance, or that an
accepted key not enrolled by aws_ork already holds, is refused.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from aws_ork.base.ids import MAX_LENGTH, is_instance_id, is_minion_id
from aws_ork.base.text import shorten

#: The default template: the minion id is the instance id.
IDENTITY = "{instance_id}"
_FIELD = re.compile(r"\{([^{}]*)\}")
#: Fields whose value identifies one instance: a template needs one of them.
UNIQUE_FIELDS = ("instance_id", "private_dns_name", "tag:")
#: The fields a template may use (``tag:`` is a prefix: ``{tag:Name}``).
FIELDS = ("instance_id", "asg_name", "private_dns_name")


class NamingError(Exception):
    """The template cannot give this instance a safe minion id. ``retry``: a value it needs
    is missing and may appear later (a tag set after launch, a DNS name not assigned yet)."""

    def __init__(self, reason: str, *, retry: bool = False) -> None:
        super().__init__(reason)
        self.reason = reason
        self.retry = retry


@dataclass(frozen=True)
class Template:
    """A parsed MinionIdTemplate (validated by the config: known fields, safe literal text)."""

    text: str = IDENTITY

    @property
    def identity(self) -> bool:
        """The minion id is the instance id: nothing to render, nothing to remember."""
        return self.text == IDENTITY

    def render(
        self, instance_id: str, tags: Mapping[str, str], *, private_dns_name: str = ""
    ) -> str:
        """The minion id for this instance; NamingError when a value is missing or the
        result is not a safe minion id. The group comes from the ``aws:autoscaling:groupName``
        tag Auto Scaling sets (EC2's word, not the message's)."""
        if self.identity:
            return instance_id

        def value(match: re.Match[str]) -> str:
            name = match.group(1)
            if name == "instance_id":
                return instance_id
            if name == "private_dns_name":
                if not private_dns_name:
                    raise NamingError(
                        "EC2 gives the instance no private DNS name (yet)", retry=True
                    )
                return private_dns_name
            if name == "asg_name":
                found = tags.get("aws:autoscaling:groupName")
                if not found:
                    raise NamingError("the instance is in no Auto Scaling group")
                return found
            key = name[len("tag:") :]
            if key not in tags:
                raise NamingError(f"the instance has no tag {key} (yet)", retry=True)
            return tags[key]

        minion_id = _FIELD.sub(value, self.text)
        if not is_minion_id(minion_id):
            raise NamingError(
                f"MinionIdTemplate gives {shorten(minion_id)}, which is not a "
                f"safe minion id (1-{MAX_LENGTH} characters of A-Z a-z 0-9 . _ "
                f"-, starting with a letter or digit)"
            )
        return minion_id


def parse_template(raw: str) -> Template:
    """Validate a MinionIdTemplate; ValueError says what is wrong (the config names the
    option)."""
    names = _FIELD.findall(raw)
    for name in names:
        if name in FIELDS:
            continue
        if name.startswith("tag:") and 0 < len(name) - 4 <= 128 and name[4:].isprintable():
            continue
        raise ValueError(
            f"has an unknown field {{{name}}}; use {{instance_id}}, "
            f"{{asg_name}}, {{private_dns_name}} or {{tag:KEY}}"
        )
    literal = _FIELD.sub("", raw)
    if "{" in literal or "}" in literal:
        raise ValueError("has an unmatched { or }")
    if literal and re.fullmatch(r"[A-Za-z0-9._-]+", literal) is None:
        raise ValueError(
            "has text outside the fields that a minion id cannot hold (use A-Z a-z 0-9 . _ -)"
        )
    if not any(name.startswith(UNIQUE_FIELDS) for name in names):
        raise ValueError(
            "needs a field that tells instances apart: {instance_id}, "
            "{private_dns_name} or a {tag:KEY}"
        )
    if raw.startswith((".", "-", "_")):
        raise ValueError("must not start with . - or _ (a minion id starts with a letter or digit)")
    return Template(raw)


def owner_of_key(minion_id: str, mapped_owner: str | None) -> str | None:
    """The instance a key under ``minion_id`` belongs to: the one the mapping names, else the
    instance whose id it is (an instance id names its own instance), else nobody known."""
    if mapped_owner is not None:
        return mapped_owner
    return minion_id if is_instance_id(minion_id) else None


def claim_refusal(
    instance_id: str,
    minion_id: str,
    *,
    templated: bool,
    owner: str | None,
    accepted: bool,
) -> str | None:
    """MinionIdTemplate: why this instance may not hold ``minion_id`` (None: it may).
    ``templated``: MinionIdTemplate names instances; ``owner``: the instance holding the id;
    ``accepted``: an accepted key is under the id."""
    if minion_id == instance_id:
        return None  # an instance id names its own instance
    if not templated or is_instance_id(minion_id):
        return (
            f"minion id {minion_id} is the id of another instance; MinionIdTemplate "
            f"never gives one instance another's id"
        )
    if owner is not None and owner != instance_id:
        return (
            f"minion id {minion_id} is held by instance {owner} (MinionIdTemplate "
            f"gives one id to one instance at a time)"
        )
    if owner is None and accepted:
        return (
            f"minion id {minion_id} belongs to an accepted key that aws_ork did not "
            f"enrol for this instance; left alone (an operator decides: salt-key -f "
            f"{minion_id})"
        )
    return None
