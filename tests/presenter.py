"""An impostor that presents its own key under a minion id again and again, as fast as the
master answers: what a stranger who reaches port 4506 can do (issue 18, item 7).

It is Salt's own minion authentication (``salt.crypt.SAuth.sign_in``, the request a
salt-minion sends at each attempt) in a loop with ``PAUSE`` seconds between attempts, instead
of salt-minion's ``acceptance_wait_time`` of at least a tenth of a second. Run as
``python -m tests.presenter MINION_CONFIG`` (a config that :func:`tests.saltenv.start_minion`
would write); it prints one line per attempt (``pending``/``retry``/``accepted``...) to
stdout, which :class:`Presenter` counts.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from tests.saltenv import SaltMaster, _short_sock_dir, _write_config, minion_config, stop_process

#: Seconds between two attempts (salt-minion waits at least 0.1 s plus acceptance_wait_time).
PAUSE = 0.02


@dataclass
class Presenter:
    """One running presenter process and the file its attempts are written to."""

    proc: subprocess.Popen
    out: Path
    pki_dir: Path

    def attempts(self) -> int:
        """How many attempts the master has answered so far."""
        try:
            return len(self.out.read_text().splitlines())
        except FileNotFoundError:
            return 0

    def public_key(self) -> str:
        return (self.pki_dir / "minion.pub").read_text().strip()

    def stop(self) -> None:
        stop_process(self.proc, 1)


def start_presenter(master: SaltMaster, root: Path, minion_id: str) -> Presenter:
    """Start presenting a new key under ``minion_id`` to ``master``."""
    root = Path(root).resolve()
    cfg = minion_config(master, root, minion_id, _short_sock_dir(root / "sock"), 0)
    for path in (root / "pki", root / "cache", root / "log", root / "run"):
        path.mkdir(parents=True, exist_ok=True)
    (root / "pki").chmod(0o700)
    config = root / "etc" / "salt" / "minion"
    _write_config(config, cfg)
    out = root / "attempts.txt"
    with open(root / "log" / "presenter.err", "wb") as err, open(out, "wb") as fh:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.presenter", str(config)],
            stdout=fh,
            stderr=err,
            start_new_session=True,
        )
    return Presenter(proc, out, root / "pki")


def main(config: str) -> None:
    import salt.channel.client
    import salt.config
    import salt.crypt

    opts = salt.config.minion_config(config)
    opts["master_ip"] = "127.0.0.1"
    opts["master_uri"] = f"tcp://127.0.0.1:{opts['master_port']}"
    opts["rejected_retry"] = True  # denied: ask again (else Salt sleeps and exits)
    auth = salt.crypt.SAuth(opts)  # makes the key pair in pki_dir
    with salt.channel.client.ReqChannel.factory(opts, crypt="clear") as channel:
        while True:
            try:
                creds = auth.sign_in(channel=channel)
            except Exception as exc:  # a refusal some versions raise: try again
                creds = type(exc).__name__
            print("accepted" if isinstance(creds, dict) else creds, flush=True)
            time.sleep(PAUSE)


if __name__ == "__main__":
    main(sys.argv[1])
