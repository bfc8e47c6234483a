"""What follows a decision: the effects applied once the key stage has done its part.

A message's decision is taken by the pure :mod:`aws_ork.decision` over what the checks found and
what the key stage did; these parts then act on it, each owning one kind of side effect:

- :class:`~aws_ork.effects.hooks.Hooks`: the lifecycle action (complete, keep alive, forget);
- :class:`~aws_ork.effects.announce.Announcer`: the signed ``aws_ork/<kind>/<id>`` event on the
  master's bus for Salt's reactor;
- :class:`~aws_ork.effects.followups.KeyFollowups`: what the arrivals watcher (a bound key
  presented) and the key directory watcher (Salt used an autosign stub) report; they call the
  key stage and these two, never the message handler.

They sit above the pure decision and below :mod:`aws_ork.decide`, which applies them.
"""
