"""The Auto Scaling calls of the lifecycle stage, with botocore's errors translated.

Every failure is one of two exceptions: :class:`ActionGone` (the action can never be
completed: the instance is gone, the token expired or was answered already) and
:class:`LifecycleError` (throttled, unreachable, not authorised: try again later).
"""

from __future__ import annotations

import logging
from typing import Any

import botocore.exceptions
import botocore.parsers

from aws_ork.aws import AWS_ERRORS, error_code
from aws_ork.base.errors import AwsOrkError

log = logging.getLogger(__name__)

#: Auto Scaling's answer for a token that no longer names a waiting action (completed,
#: abandoned, timed out, or the instance is gone).
NO_ACTIVE_ACTION = "No active Lifecycle Action found"
#: The lifecycle states in which Auto Scaling itself says an instance is leaving.
TERMINATING_STATES = frozenset({"Terminating:Wait", "Terminating:Proceed"})


class LifecycleError(AwsOrkError):
    """Auto Scaling could not be asked: try again later."""


class ActionGone(AwsOrkError):
    """The lifecycle action is no longer waiting: nothing left to complete."""


class HookClient:
    """CompleteLifecycleAction, RecordLifecycleActionHeartbeat, DescribeLifecycleHooks and
    DescribeAutoScalingInstances on one Auto Scaling client."""

    def __init__(self, autoscaling: Any) -> None:
        self.autoscaling = autoscaling
        self._timeouts: dict[tuple[str, str], int] = {}  # (group, hook) -> HeartbeatTimeout

    def complete(self, group: str, hook: str, token: str, result: str = "CONTINUE") -> None:
        """Answer the action; ActionGone when there is none to answer.

        The action is named by its token alone (AWS takes the token or the instance id):
        the token is what Auto Scaling sent for this one action, while an instance id taken
        from a message would let that message answer whatever action the instance has."""
        self._call(
            "CompleteLifecycleAction",
            self.autoscaling.complete_lifecycle_action,
            AutoScalingGroupName=group,
            LifecycleHookName=hook,
            LifecycleActionToken=token,
            LifecycleActionResult=result,
        )

    def heartbeat(self, group: str, hook: str, token: str) -> None:
        """Restart the action's HeartbeatTimeout; ActionGone when it no longer waits. By the
        token alone, as :meth:`complete`."""
        self._call(
            "RecordLifecycleActionHeartbeat",
            self.autoscaling.record_lifecycle_action_heartbeat,
            AutoScalingGroupName=group,
            LifecycleHookName=hook,
            LifecycleActionToken=token,
        )

    def heartbeat_timeout(self, group: str, hook: str) -> int | None:
        """The hook's HeartbeatTimeout in seconds, asked once per hook; None when the hook is
        not found (deleted meanwhile)."""
        key = (group, hook)
        if key not in self._timeouts:
            reply = self._call(
                "DescribeLifecycleHooks",
                self.autoscaling.describe_lifecycle_hooks,
                AutoScalingGroupName=group,
                LifecycleHookNames=[hook],
            )
            for item in reply.get("LifecycleHooks", []):
                if item.get("LifecycleHookName") == hook and "HeartbeatTimeout" in item:
                    self._timeouts[key] = int(item["HeartbeatTimeout"])
        return self._timeouts.get(key)

    def lifecycle_state(self, instance_id: str) -> str | None:
        """Auto Scaling's LifecycleState of the instance (``InService``,
        ``Terminating:Wait``, ...); None when no group has it."""
        reply = self._call(
            "DescribeAutoScalingInstances",
            self.autoscaling.describe_auto_scaling_instances,
            InstanceIds=[instance_id],
        )
        for item in reply.get("AutoScalingInstances", []):
            if item.get("InstanceId") == instance_id:
                return str(item.get("LifecycleState", "")) or None
        return None

    @staticmethod
    def _call(name: str, method: Any, **params: Any) -> Any:
        try:
            return method(**params)
        except botocore.exceptions.ClientError as exc:
            code = error_code(exc)
            message = str(exc.response.get("Error", {}).get("Message", ""))
            if code == "ValidationError" and NO_ACTIVE_ACTION.lower() in message.lower():
                raise ActionGone(f"{name}: {NO_ACTIVE_ACTION}") from exc
            raise LifecycleError(f"Auto Scaling {name} failed: {code}: {message}") from exc
        # an unparsable answer (an HTML error page from a proxy) is no BotoCoreError
        except (*AWS_ERRORS, botocore.parsers.ResponseParserError) as exc:
            raise LifecycleError(
                f"Auto Scaling {name} failed: {type(exc).__name__}: {exc}"
            ) from exc
