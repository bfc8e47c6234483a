"""The SigningCertURL policy: which certificate URLs an SNS envelope may name.

The certificate URL comes from the message itself, so it is the attack surface: a forger names a
certificate of their own. We therefore accept only ``https://sns.<region>.amazonaws.com[.cn]/
SimpleNotificationService-<alnum>.pem``, checked component by component with urllib.parse and
again by a regex anchored on the whole URL. Rules chosen here:

* no explicit port at all (not even ``:443``), no user info, query, fragment, percent-escapes,
  backslashes, upper case or trailing dot; ``.amazonaws.com.cn`` only for ``cn-*`` regions;
* region: ``[a-z]{2}(-gov)?-[a-z]+-[0-9]{1,2}`` (us-east-1, us-gov-west-1, cn-northwest-1 ...);
* if TopicArn is an SNS ARN naming a region, the certificate's region must equal it
  (:mod:`aws_ork.checks.signature`, with :data:`TOPIC_ARN_RE`);
* with ``allowed_regions`` (the regions of AllowedTopicArns, see :func:`regions_of`), the
  certificate's region must be one of them: an invented region is refused before any fetch.
"""

from __future__ import annotations

import re
import urllib.parse
from collections.abc import Iterable

from aws_ork.base.text import shorten

_REGION = r"[a-z]{2}(?:-gov)?-[a-z]+-[0-9]{1,2}"
_HOST_RE = re.compile(rf"sns\.(?P<region>{_REGION})\.amazonaws\.com(?P<cn>\.cn)?", re.ASCII)
_PATH_RE = re.compile(r"/SimpleNotificationService-[A-Za-z0-9]{1,64}\.pem", re.ASCII)
_URL_RE = re.compile(rf"https://{_HOST_RE.pattern}{_PATH_RE.pattern}", re.ASCII)
_FORBIDDEN = frozenset(" \\%[]")  # space, backslash, percent-escapes, IPv6 literals
TOPIC_ARN_RE = re.compile(r"arn:[a-z-]+:sns:(?P<region>[^:]+):", re.ASCII)


def regions_of(topic_arns: Iterable[str]) -> frozenset[str] | None:
    """The regions of the SNS topics named, for ``SignatureVerifier(allowed_regions=...)``.

    None (no restriction) when no topic is named or ``*`` is among them, as AllowedTopicArns
    then restricts nothing either. An entry that is no SNS ARN with a valid region adds no
    region: it matches no genuine envelope, so it must not open a region either.
    """
    arns = [topic_arns] if isinstance(topic_arns, str) else list(topic_arns)
    if not arns or "*" in arns:
        return None
    regions = set()
    for arn in arns:
        match = TOPIC_ARN_RE.match(arn)
        if match and re.fullmatch(_REGION, match["region"], re.ASCII):
            regions.add(match["region"])
    return frozenset(regions)


def check_cert_url(url: object) -> str:
    """Return the host of an acceptable SNS SigningCertURL; ValueError(reason) otherwise."""
    if not isinstance(url, str):
        raise ValueError("field 'SigningCertURL' is not a string")
    if not url.isascii() or not url.isprintable() or not _FORBIDDEN.isdisjoint(url):
        raise ValueError(f"SigningCertURL {shorten(url, 80)} has forbidden characters")
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError as e:
        raise ValueError(
            f"SigningCertURL {shorten(url, 80)} does not parse: {shorten(str(e), 80)}"
        ) from None
    if parts.scheme != "https":
        raise ValueError(f"SigningCertURL scheme {shorten(parts.scheme, 80)} is not https")
    if "@" in parts.netloc:
        raise ValueError("SigningCertURL has user info")
    if ":" in parts.netloc:
        raise ValueError("SigningCertURL has an explicit port")
    host_match = _HOST_RE.fullmatch(parts.netloc)
    if host_match is None:
        raise ValueError(f"SigningCertURL host {shorten(parts.netloc, 80)} is not an SNS host")
    if bool(host_match["cn"]) != host_match["region"].startswith("cn-"):
        raise ValueError(f"SigningCertURL host {shorten(parts.netloc, 80)} is not an SNS host")
    if parts.query or parts.fragment or "?" in url or "#" in url:
        raise ValueError("SigningCertURL has a query or fragment")
    if _PATH_RE.fullmatch(parts.path) is None:
        raise ValueError(f"SigningCertURL path {shorten(parts.path, 80)} is not an SNS certificate")
    if _URL_RE.fullmatch(url) is None:  # second gate over the whole string
        raise ValueError(f"SigningCertURL {shorten(url, 80)} is not an SNS certificate URL")
    return parts.netloc
