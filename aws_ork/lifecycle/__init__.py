"""Stage 5, lifecycle hooks: tell Auto Scaling when an instance's key work is done.

A launching hook holds a new instance in ``Pending:Wait`` until aws_ork has accepted its
minion's key (directly, under key binding, or through Salt's use of the autosign stub), then
:class:`~aws_ork.lifecycle.completer.Completer` answers ``CONTINUE``; meanwhile it keeps the
action alive with heartbeats. A terminating hook is answered ``CONTINUE`` as soon as the key
is deleted. :mod:`~aws_ork.lifecycle.client` wraps the Auto Scaling calls.
"""

from aws_ork.lifecycle.client import ActionGone, HookClient, LifecycleError
from aws_ork.lifecycle.completer import Completer, HookAction

__all__ = ["ActionGone", "Completer", "HookAction", "HookClient", "LifecycleError"]
