"""The Salt master's own ways of accepting a key, each of which makes aws_ork's checks moot.

Salt asks these at every authentication, before any key reaches ``minions_pre``
(``salt.daemons.masterapi.AutoKey.check_autosign`` and ``open_mode`` in ``salt/master.py``):
a key they let in is accepted by Salt itself, whatever aws_ork would have decided about the
topic, the signature, EC2 or the key binding. So each one set is a FAIL of ``--check`` and a
WARNING at every start and SIGHUP reload; the daemon still runs (the operator chose it).

- ``auto_accept: True``: every key presented, by anyone who reaches port 4506.
- ``open_mode: True``: every minion is served, with whatever key it presents.
- ``autosign_file``: any key whose id matches a line (exact, glob or regex). Salt has no
  default for it and reads the file at each authentication, so it counts when set, whether
  or not the file exists yet: a file written later takes effect without a restart.
- ``autosign_grains_dir``: any key whose minion reports a grain value listed there; the
  minion chooses its own grains. No default either; set is enough, for the same reason.

``autoreject_file`` only refuses keys, and the ``minions_autosign/`` stubs are aws_ork's own
pre-authorisations: neither is reported.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def accepting_options(opts: Mapping[str, Any]) -> list[tuple[str, str]]:
    """``(option, why)`` for each option of the master's resolved ``opts`` (Salt's
    ``master_config``, master.d includes merged) that accepts keys without aws_ork."""
    found: list[tuple[str, str]] = []
    if opts.get("auto_accept") is True:
        found.append(
            (
                "auto_accept",
                "auto_accept is True: Salt accepts every key presented, "
                "by anyone who reaches the master's port 4506",
            )
        )
    if opts.get("open_mode") is True:
        found.append(
            ("open_mode", "open_mode is True: Salt serves every minion, whatever key it presents")
        )
    autosign_file = opts.get("autosign_file")
    if autosign_file:
        found.append(
            (
                "autosign_file",
                f"autosign_file is {autosign_file}: Salt accepts every "
                f"key whose id matches a line of it, reading it at each "
                f"authentication (exists or not)",
            )
        )
    grains_dir = opts.get("autosign_grains_dir")
    if grains_dir:
        found.append(
            (
                "autosign_grains_dir",
                f"autosign_grains_dir is {grains_dir}: Salt "
                f"accepts every key whose minion reports a grain "
                f"listed there, and a minion chooses its grains",
            )
        )
    return found


def warnings(opts: Mapping[str, Any]) -> list[str]:
    """The WARNING lines of :func:`accepting_options` for the daemon's log."""
    return [
        f"salt master {why}; aws_ork's checks decide nothing for those keys"
        for _option, why in accepting_options(opts)
    ]
