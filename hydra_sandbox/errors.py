"""One error hierarchy for Hydra.

Every error carries a message that says what was wrong, where (file, field, session id) and what to
do about it. The MCP layer turns them into ``ToolError``s and the CLI into one red line and an exit
code; neither shows a traceback for bad input.
"""

from __future__ import annotations


def shown(value: object, limit: int = 80) -> str:
    """A caller-given value quoted for a message: one line (control characters escaped), at most
    ``limit`` characters, so a huge or hostile argument cannot flood the error that names it."""
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


class HydraError(Exception):
    """Root of every error Hydra raises on purpose."""

    exit_code: int = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        self.message = message
        self.hint = hint
        super().__init__(self.__str__())

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message

    def __reduce__(self) -> tuple[object, tuple[type[HydraError], dict[str, object]]]:
        """Pickled with its fields, whatever its constructor takes (the index process sends errors back)."""
        return _rebuild, (type(self), dict(self.__dict__))


def _rebuild(cls: type[HydraError], fields: dict[str, object]) -> HydraError:
    error = cls.__new__(cls)
    error.__dict__.update(fields)
    Exception.__init__(error, str(error))
    return error


class ConfigError(HydraError):
    """A configuration file, setting or argument is invalid."""

    exit_code = 2


class LimitExceededError(ConfigError):
    """An argument or a stored structure is over one of Hydra's limits (:mod:`hydra_sandbox.limits`):
    the message names the argument, the limit and what was given."""


class ProfileNotFoundError(ConfigError):
    """A profile id that no profile directory defines."""


class PolicyNotFoundError(ConfigError):
    """A policy name that no policy directory defines."""


class PolicyViolation(HydraError):
    """A request would widen a policy or break a rule of it."""

    exit_code = 3


class AccessDenied(PolicyViolation):
    """The caller (an agent, or a token that is not the operator's) may not do this, or may not see
    that session (see :mod:`hydra_sandbox.authority`)."""


class UnsafeSpecError(PolicyViolation):
    """A container spec that would weaken the sandbox boundary (a root user, a capability, a host path)."""


class WorkspaceError(HydraError):
    """A workspace could not be staged, diffed or applied."""

    exit_code = 4


class ApplyConflictError(WorkspaceError):
    """Files changed on the host since the session started, or another session holds the lock."""


class RuntimeUnavailableError(HydraError):
    """The container runtime (Docker) cannot be reached or lacks an image."""

    exit_code = 5


class ImageBuildError(HydraError):
    """Building or staging an image failed."""

    exit_code = 5


class SessionNotFoundError(HydraError):
    """A session id that Hydra has no record of."""

    exit_code = 6


class InvalidSessionIdError(SessionNotFoundError):
    """A session id that is not of Hydra's form (``s-`` and 12 hex digits): never looked up or used."""


class InvalidTransitionError(HydraError):
    """A lifecycle transition that the state machine does not allow."""

    exit_code = 7


class StoreError(HydraError):
    """The journal or the search index failed."""

    exit_code = 8


class UnindexableEventError(StoreError):
    """An event the index must not take (over an index limit); the indexer sets it aside, no retry."""

    def __init__(self, event_id: str, reason: str) -> None:
        self.event_id = event_id
        self.reason = reason
        super().__init__(
            f"event {event_id} cannot be indexed: {reason}",
            hint="it stays in the journal; the indexer sets it aside and goes on",
        )


class EmbeddingModelMissingError(StoreError):
    """The embedding model directory is missing or incomplete."""


class ScriptError(ConfigError):
    """A scripted-model script (hydra_sandbox.testing) is invalid, or a run could not follow it."""


class ToolCallError(HydraError):
    """An MCP tool call made by a test helper (hydra_sandbox.testing) answered with an error."""
