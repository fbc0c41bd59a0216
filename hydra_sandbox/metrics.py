"""Prometheus metrics for one Hydra server, in a registry of its own (never the process-wide default).

Two kinds of metric:

- counted as things happen: events recorded (a :class:`~hydra_sandbox.recorder.Recorder` listener),
  container starts and failures (a :class:`~hydra_sandbox.sandbox.ContainerObserver`), tool-call
  latency and errors (counted by :class:`hydra_sandbox.mcp.middleware.HydraMiddleware`);
- read at scrape time, so they are never stale: sessions by status, queue length and index lag from the
  services, masking hits by rule from the masker's own per-rule tally.

Every label comes from a bounded set (event types, failure causes, rule names, registered tool names
plus ``unknown``); no label ever holds a secret, a path or a session id. Creating a
:class:`HydraMetrics` has no side effect beyond its own registry; it reads the services only after
:meth:`HydraMetrics.attach`.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, get_args

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector

from hydra_sandbox.events import EVENT_TYPES, Event
from hydra_sandbox.sandbox import ObservableSandbox
from hydra_sandbox.sandbox.budget import BUDGET_EVENT, USAGE_EVENT
from hydra_sandbox.sandbox.supervisor import FailureCause

if TYPE_CHECKING:
    from hydra_sandbox.services import Services

CONTENT_TYPE = CONTENT_TYPE_LATEST
UNKNOWN_TOOL = "unknown"
"""The ``tool`` label of calls to a tool that does not exist (a caller cannot invent label values)."""
TOOL_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
"""Seconds; up to an hour because wait_session may block that long."""


class HydraMetrics:
    """The metrics of one server. Thread-safe: tools update it on the event loop, scrapes read it in a
    worker thread."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self._services: Services | None = None
        self.events_recorded = Counter(
            "hydra_events_recorded", "Events appended to the journal, by event type.", ["type"], registry=self.registry
        )
        self.container_starts = Counter("hydra_container_starts", "Agent containers started.", registry=self.registry)
        self.container_failures = Counter(
            "hydra_container_failures",
            "Agent container runs that did not complete, by cause.",
            ["reason"],
            registry=self.registry,
        )
        self.tool_duration = Histogram(
            "hydra_tool_call_duration_seconds",
            "Wall-clock time of MCP tool calls, by tool.",
            ["tool"],
            buckets=TOOL_BUCKETS,
            registry=self.registry,
        )
        self.tool_errors = Counter(
            "hydra_tool_errors",
            "MCP tool calls that raised or returned an error, by tool.",
            ["tool"],
            registry=self.registry,
        )
        self.model_tokens = Counter(
            "hydra_model_tokens",
            "Model tokens used through the model gateways, by kind (input, output); per session in the journal.",
            ["kind"],
            registry=self.registry,
        )
        self.model_budgets_spent = Counter(
            "hydra_model_budgets_spent", "Sessions stopped by their max_model_tokens budget.", registry=self.registry
        )
        for kind in ("input", "output"):
            self.model_tokens.labels(kind)
        for event_type in EVENT_TYPES:
            self.events_recorded.labels(event_type)
        for cause in get_args(FailureCause):
            self.container_failures.labels(cause)
        self.registry.register(_ScrapeTimeCollector(self))

    # -- wiring ------------------------------------------------------------------------------

    def attach(self, services: Services) -> None:
        """Start counting what ``services`` do, and read their state at each scrape."""
        self._services = services
        services.manager.recorder.subscribe(self.record_event)
        if isinstance(services.sandbox, ObservableSandbox):
            services.sandbox.add_observer(self)

    def detach(self) -> None:
        """Stop reading ``services`` (they are closing); counted values are kept."""
        if self._services is not None:
            self._services.manager.recorder.unsubscribe(self.record_event)
        self._services = None

    @property
    def services(self) -> Services | None:
        return self._services

    # -- counting ----------------------------------------------------------------------------

    def record_event(self, event: Event) -> None:
        self.events_recorded.labels(event.type).inc()
        gateway = event.data.get("gateway")
        if gateway == USAGE_EVENT and isinstance(usage := event.data.get("model_usage"), dict):
            for kind in ("input", "output"):
                tokens = usage.get(f"{kind}_tokens")
                if isinstance(tokens, int) and tokens > 0:
                    self.model_tokens.labels(kind).inc(tokens)
        elif gateway == BUDGET_EVENT:
            self.model_budgets_spent.inc()

    def container_started(self) -> None:
        self.container_starts.inc()

    def container_failed(self, cause: FailureCause) -> None:
        self.container_failures.labels(cause).inc()

    def tool_called(self, tool: str, seconds: float, *, failed: bool) -> None:
        self.tool_duration.labels(tool).observe(seconds)
        if failed:
            self.tool_errors.labels(tool).inc()

    # -- exposing ----------------------------------------------------------------------------

    def render(self) -> bytes:
        """The text exposition format. Blocking (reads the journal for the index lag): call it in a
        worker thread from async code."""
        return generate_latest(self.registry)


class _ScrapeTimeCollector(Collector):
    """Values computed from the services at each scrape; nothing while no services are attached."""

    def __init__(self, metrics: HydraMetrics) -> None:
        self._metrics = metrics

    def collect(self) -> Iterable[Metric]:
        services = self._metrics.services
        if services is None:
            return []
        sessions = GaugeMetricFamily("hydra_sessions", "Sessions known to the server, by status.", labels=["status"])
        for status, count in services.manager.status_counts().items():
            sessions.add_metric([status.value], count)
        queue = GaugeMetricFamily("hydra_queue_length", "Sessions queued, waiting for a free worker.")
        queue.add_metric([], services.manager.queue_length())
        lag = GaugeMetricFamily("hydra_index_lag_events", "Journal events not yet copied into the search index.")
        lag.add_metric([], services.indexer.lag())
        aside = GaugeMetricFamily(
            "hydra_index_set_aside_events", "Journal events the search index would not take (see hydra://status)."
        )
        aside.add_metric([], services.indexer.set_aside_count())
        hits = CounterMetricFamily(
            "hydra_masking_hits", "Secrets masked, by the rule that matched them.", labels=["rule"]
        )
        tally = dict.fromkeys(services.masker.rule_names, 0) | services.masker.hits
        for rule, count in sorted(tally.items()):
            hits.add_metric([rule], count)
        return [sessions, queue, lag, aside, hits]
