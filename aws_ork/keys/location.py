"""Where the master's key store keeps each key, by state (Salt's ``localfs_key`` driver).

One file per minion id in each of these directories under the master's ``pki_dir``; the
autosign stubs live beside them. Every module that names one of them takes it from here.
"""

from __future__ import annotations

ACCEPTED = "minions"
PENDING = "minions_pre"
REJECTED = "minions_rejected"
DENIED = "minions_denied"
AUTOSIGN = "minions_autosign"

#: The four key states, in Salt's order.
KEY_STATES = (ACCEPTED, PENDING, REJECTED, DENIED)
