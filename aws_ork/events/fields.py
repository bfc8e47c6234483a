"""Typed access to untrusted JSON: a field of the wrong type reads as missing."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_ork.base.ids import is_instance_id
from aws_ork.base.text import shorten


def text(doc: Mapping[str, Any], name: str) -> str | None:
    """``doc[name]`` if it is a string, else None."""
    value = doc.get(name)
    return value if isinstance(value, str) else None


def mapping(doc: Mapping[str, Any], name: str) -> Mapping[str, Any] | None:
    """``doc[name]`` if it is a JSON object, else None."""
    value = doc.get(name)
    return value if isinstance(value, dict) else None


def instance_id(doc: Mapping[str, Any], name: str) -> tuple[str | None, str]:
    """The instance id in ``doc[name]`` and '' or None and the reason it is unusable."""
    value = doc.get(name)
    if value is None:
        return None, f"no {name}"
    if not is_instance_id(value):
        return None, f"{name} {shorten(value)} is not an instance id"
    return value, ""
