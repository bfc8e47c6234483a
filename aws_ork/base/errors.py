"""The exceptions aws_ork raises.

Foreign errors (botocore, Salt, the OS) are translated into these where we call them,
so each layer above catches one family it understands.
"""

from __future__ import annotations


class AwsOrkError(Exception):
    """Root of every error aws_ork raises on purpose."""


class ConfigError(AwsOrkError, ValueError):
    """A config file or option is unusable; the CLI prints it as one line and exits 2."""

    def __init__(self, source: str, option: str | None, problem: str) -> None:
        self.source = source
        self.option = option
        self.problem = problem
        where = f"{source}: {option}" if option else source
        super().__init__(f"{where}: {problem}")


class KeyStoreError(AwsOrkError, OSError):
    """The Salt key store could not be read or changed (permissions, disk, cache driver)."""


class QueueError(AwsOrkError):
    """SQS could not be reached or refused a call."""


class MirrorError(AwsOrkError):
    """The S3 mirror of the pki tree failed; it is retried later."""


class StateError(AwsOrkError):
    """The daemon's own state in StateDir cannot be read or written."""
