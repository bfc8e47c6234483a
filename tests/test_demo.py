"""The local demo (``tox -e demo``, the README's first quick-start command) runs end to end and
says what happened: pre-authorised, accepted on first contact, removed on terminate, and, under
key binding by key, the impostor refused and the genuine minion accepted at its first
contact; aws_ork stops cleanly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path


def test_the_demo_shows_the_real_flow_and_ends_without_warnings():
    root = Path(__file__).parent.parent
    run = subprocess.run(
        [sys.executable, "-m", "tests.demo"], cwd=root, capture_output=True, text=True, timeout=600
    )
    out = run.stdout
    assert run.returncode == 0, out[-4000:] + run.stderr[-2000:]
    for said in (
        "pre-authorised",
        "accepted by the salt-master on the minion's first contact",
        "test.ping -> True",
        "aws_ork removed the key",
        "an impostor's salt-minion connects first",
        "published it on its tags salt:minion-key-0, salt:minion-key-1",
        "the genuine minion answers, accepted at its first contact; the impostor's key was "
        "never accepted",
        "aws_ork stopped cleanly both times (exit 0, no warnings but act 1's KeyBinding = off)",
    ):
        assert said in out, said
    assert "unclosed" not in out and "Traceback" not in out
