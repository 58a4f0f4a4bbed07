"""Errors raised while building a sandbox."""

from __future__ import annotations


class SandboxError(Exception):
    """Base class for sandbox failures."""


class SandboxSetupError(SandboxError):
    """A named setup step failed inside the new sandbox.

    `step` says what was being done (e.g. "bind /usr -> /usr"), `errno` is
    the kernel's answer, so an operator can tell which feature is missing.
    """

    def __init__(self, step: str, errno: int, message: str) -> None:
        super().__init__(f"sandbox setup failed at step '{step}': {message}")
        self.step = step
        self.errno = errno
        self.message = message


class SpawnerError(SandboxError):
    """The spawner process is gone or answered something unexpected."""
