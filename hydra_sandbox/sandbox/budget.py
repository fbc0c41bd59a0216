"""A session's model token budget: the model gateway reports each response's usage here
(:class:`ModelBudget` is its ``on_usage`` callback), each becomes a ``status`` event, and once the
session's ``resources.max_model_tokens`` is spent the gateway refuses every further model request and the
run ends ``failed`` with the reason.

Usage is counted per session (a resumed run continues the count) for as long as this server runs; the
events carry the running total, so the journal shows where a session stands. A gateway that outlives a
server (beside an agent on a remote engine) numbers its reports: the next server counts them all again
from its start, and the recorder keeps each event once.
"""

from __future__ import annotations

from hydra_sandbox.events import EventDraft
from hydra_sandbox.model_usage import TokenUsage
from hydra_sandbox.sandbox.protocol import EventSink

__all__ = ["BUDGET_EVENT", "USAGE_EVENT", "USAGE_STREAM", "ModelBudget"]

USAGE_EVENT = "model_usage"
"""``data["gateway"]`` of the event recording one model response's usage."""
BUDGET_EVENT = "model_budget_spent"
"""``data["gateway"]`` of the event recording that the session's budget is spent."""
USAGE_STREAM = "model-usage"
"""``data["stream"]`` of a usage event whose gateway numbered it: the recorder then drops it when a
re-attaching server reads the gateway's log again (the count still includes it)."""


class ModelBudget:
    """Counts one session's model tokens; see the module documentation."""

    def __init__(self, session_id: str, limit: int | None, sink: EventSink, used: int = 0) -> None:
        self.session_id = session_id
        self.limit = limit
        self.sink = sink
        self.used = used
        self.spent: str | None = None

    async def __call__(self, usage: TokenUsage) -> str | None:
        """Record ``usage``; the reason to refuse further requests once the budget is spent."""
        self.used += usage.total_tokens
        of = f" of {self.limit}" if self.limit is not None else ""
        counted = (
            f"{usage.total_tokens} tokens (input {usage.input_tokens}, output {usage.output_tokens})"
            if usage.known
            else "usage not reported"
        )
        await self.sink(
            EventDraft(
                type="status",
                text=f"model response: {counted}; {self.used}{of} used by this session",
                data={
                    "gateway": USAGE_EVENT,
                    "model_usage": usage.model_dump(exclude={"seq"}),
                    "session_tokens": self.used,
                    "max_model_tokens": self.limit,
                    **({"stream": USAGE_STREAM, "seq": usage.seq} if usage.seq is not None else {}),
                },
                tags=["model-usage"],
            )
        )
        if self.limit is None or self.used < self.limit or self.spent:
            return self.spent
        self.spent = (
            f"model token budget spent: session {self.session_id} used {self.used} tokens, "
            f"resources.max_model_tokens is {self.limit}; further model requests are refused"
        )
        await self.sink(
            EventDraft(
                type="error",
                text=self.spent,
                data={"gateway": BUDGET_EVENT, "session_tokens": self.used, "max_model_tokens": self.limit},
                tags=["model-usage"],
            )
        )
        return self.spent
