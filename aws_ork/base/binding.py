"""Key binding: the instance publishes its minion key's fingerprint; only that key is accepted.

Without binding, whoever presents a key first under a new instance's id gets it accepted
(an autosign stub accepts the first key; otherwise the first pending key). With
``KeyBinding = tag`` the instance itself tags its EC2 instance with the fingerprint of the key
its minion made (``data/instance/aws_ork-bind-minion.sh``, run from user data, with an
instance role that may tag only itself with that tag key), the EC2 check reads the tag from
the DescribeInstances it already makes, and the key stage accepts exactly the key with that
fingerprint, wherever Salt put it (pending, or denied because an impostor's key was pending
first), and deletes an impostor's pending key.

Salt 3008 has two fingerprints for one key: ``salt-key -f`` on the master hashes the whole
PEM text, ``salt-call --local key.finger`` on the minion hashes the PEM body without its
``BEGIN``/``END`` lines. Both are hashes of the same public key, so either is accepted (and
the hash of the PEM text without the blanks at its ends, the form :func:`finger` gives).
"""

from __future__ import annotations

import re

#: A fingerprint as Salt prints it: hex pairs separated by colons (sha256: 32 pairs).
FINGERPRINT = re.compile(r"[0-9a-f]{2}(?::[0-9a-f]{2}){15,63}")


def normalise(value: str) -> str | None:
    """The tag value as a fingerprint (lower case, surrounding blanks removed); None when it
    is not one."""
    text = value.strip().lower()
    return text if FINGERPRINT.fullmatch(text) else None


def fingerprints(pub: str, hash_type: str = "sha256") -> frozenset[str]:
    """Both of Salt's fingerprints of this public key (see the module docstring)."""
    import salt.utils.crypt

    data = pub.encode("utf-8")
    # salt.utils.crypt.pem_finger(path=...): the non-blank lines but the first and the last
    body = b"".join([line for line in data.splitlines(True) if line.strip()][1:-1])
    body = body.replace(b"\r\n", b"\n")
    return frozenset(
        salt.utils.crypt.pem_finger(key=blob, sum_type=hash_type)
        for blob in (data, data.strip(), body)
    )


def matches(pub: str, fingerprint: str, hash_type: str = "sha256") -> bool:
    """Is ``pub`` the key with this fingerprint?"""
    return fingerprint in fingerprints(pub, hash_type)


def finger(pub: str, hash_type: str = "sha256") -> str:
    """The fingerprint of this key for log lines and the impostor tally: of its PEM text
    without the blanks at its ends (what ``salt-key -f`` prints for a key stored that way).
    One key has one such name whichever file it was read from: Salt writes a denied key as
    presented and a pending or accepted one as stored, which may differ by a newline."""
    import salt.utils.crypt

    return str(salt.utils.crypt.pem_finger(key=pub.strip().encode("utf-8"), sum_type=hash_type))
