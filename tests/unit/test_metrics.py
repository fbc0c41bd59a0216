"""Prometheus metrics: the in-memory server with a fake sandbox is driven through its tools, then its
registry is scraped (directly, and over HTTP through /metrics) and the counters must have moved by
exactly what the calls did."""

from __future__ import annotations

import asyncio
import collections
import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
from fastmcp import Client
from fastmcp.server.auth.auth import AccessToken, TokenVerifier
from starlette.testclient import TestClient

from hydra_sandbox.agent_endpoint import AgentTokens
from hydra_sandbox.events import Event, EventDraft, SessionRef
from hydra_sandbox.mcp.auth import AgentTokenVerifier, HydraTokenVerifier
from hydra_sandbox.metrics import HydraMetrics
from hydra_sandbox.settings import HydraSettings, load_settings
from tests.fake_sandbox import FakeRun, FakeSandbox, command, message
from tests.hydra_server import operator_server, serve

SECRET = "sk-proj-METRICSTESTSECRETabcdefghijklmnopqrstuvwxyz0123"
AWS_KEY = "AKIAIOSFODNN7EXAMPLE"
OPERATOR_TOKEN = "operator-token-for-metrics-tests"


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    (path / "app.py").write_text("x = 1\n")
    return path


@pytest.fixture
def sandbox() -> FakeSandbox:
    sandbox = FakeSandbox()
    sandbox.script(
        "LEAK",
        FakeRun(
            drafts=[
                command(f"cat .env # {SECRET}", 0, f"OPENAI_API_KEY={SECRET}"),
                message(f"found an AWS key {AWS_KEY} in config"),
            ]
        ),
    )
    return sandbox


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HydraSettings:
    monkeypatch.setenv("HYDRA_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("HYDRA_MODEL_API_KEY", SECRET)
    return load_settings()


@pytest.fixture
def metrics() -> HydraMetrics:
    return HydraMetrics()


@pytest.fixture
async def client(settings: HydraSettings, sandbox: FakeSandbox, metrics: HydraMetrics) -> AsyncIterator[Client]:
    async with serve(settings, sandbox, metrics=metrics) as hydra:
        yield hydra.client


def value(metrics: HydraMetrics, name: str, **labels: str) -> float:
    found = metrics.registry.get_sample_value(name, labels)
    return 0.0 if found is None else found


async def call(client: Client, name: str, **args: Any) -> dict[str, Any]:
    result = await client.call_tool(name, args)
    assert result.structured_content is not None
    return result.structured_content


async def spawn_and_wait(client: Client, workdir: Path, prompt: str) -> str:
    session_id: str = (await call(client, "spawn_agent", working_dir=str(workdir), custom_prompt=prompt))["session_id"]
    waited = await call(client, "wait_session", session_id=session_id, timeout_s=10)
    assert waited["finished"], waited
    return session_id


async def eventually(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    while not predicate():
        assert loop.time() < deadline, "condition not reached before the deadline"
        await asyncio.sleep(0.01)


async def test_events_are_counted_by_type_exactly_as_the_journal_holds_them(
    client: Client, metrics: HydraMetrics, workdir: Path
) -> None:
    types = ("status", "command", "test", "message", "checklist", "summary")
    before = {t: value(metrics, "hydra_events_recorded_total", type=t) for t in types}
    session_id = await spawn_and_wait(client, workdir, "fix the bug")
    events = (await call(client, "tail_logs", session_id=session_id, limit=1000))["events"]
    journaled = collections.Counter(e["type"] for e in events)
    assert journaled["command"] == 1 and journaled["test"] == 1 and journaled["checklist"] >= 1
    for t in types:
        assert value(metrics, "hydra_events_recorded_total", type=t) - before[t] == journaled[t], t


async def test_masking_hits_are_counted_by_rule_and_the_secret_is_never_exported(
    client: Client, metrics: HydraMetrics, workdir: Path
) -> None:
    known = value(metrics, "hydra_masking_hits_total", rule="known-secret")
    aws = value(metrics, "hydra_masking_hits_total", rule="aws-access-key")
    await spawn_and_wait(client, workdir, "LEAK")
    # the command event holds the model key four times: twice in its text, once in data.command, once
    # in data.output; the message holds one AWS key id
    assert value(metrics, "hydra_masking_hits_total", rule="known-secret") - known == 4
    assert value(metrics, "hydra_masking_hits_total", rule="aws-access-key") - aws == 1
    exported = metrics.render().decode()
    assert SECRET not in exported and AWS_KEY not in exported
    assert 'hydra_masking_hits_total{rule="jwt"} 0.0' in exported  # every rule is listed, even unused


async def test_tool_latency_is_observed_once_per_call_and_errors_are_counted_per_tool(
    client: Client, metrics: HydraMetrics
) -> None:
    def count(tool: str) -> float:
        return value(metrics, "hydra_tool_call_duration_seconds_count", tool=tool)

    def errors(tool: str) -> float:
        return value(metrics, "hydra_tool_errors_total", tool=tool)

    before = {t: (count(t), errors(t)) for t in ("list_agents", "list_sessions", "get_diff", "unknown")}
    for _ in range(3):
        await call(client, "list_agents")
    await call(client, "list_sessions")
    refused = await client.call_tool("get_diff", {"session_id": "s-nope"}, raise_on_error=False)
    assert refused.is_error
    missing = await client.call_tool("no_such_tool", {}, raise_on_error=False)
    assert missing.is_error
    assert (count("list_agents"), errors("list_agents")) == (before["list_agents"][0] + 3, before["list_agents"][1])
    assert count("list_sessions") == before["list_sessions"][0] + 1
    assert (count("get_diff"), errors("get_diff")) == (before["get_diff"][0] + 1, before["get_diff"][1] + 1)
    assert errors("unknown") == before["unknown"][1] + 1
    assert "no_such_tool" not in metrics.render().decode()  # a caller cannot invent label values


async def test_session_status_gauge_and_queue_length_are_read_at_scrape_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox: FakeSandbox, metrics: HydraMetrics, workdir: Path
) -> None:
    monkeypatch.setenv("HYDRA_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("HYDRA_MAX_CONCURRENT_AGENTS", "1")
    sandbox.gate = asyncio.Event()
    async with Client(operator_server(load_settings(), sandbox, metrics=metrics)) as client:
        first = (await call(client, "spawn_agent", working_dir=str(workdir)))["session_id"]
        second = (await call(client, "spawn_agent", working_dir=str(workdir)))["session_id"]
        await eventually(lambda: value(metrics, "hydra_sessions", status="running") == 1)
        assert value(metrics, "hydra_sessions", status="queued") == 1
        assert value(metrics, "hydra_queue_length") == 1
        assert value(metrics, "hydra_sessions", status="awaiting_approval") == 0
        sandbox.gate.set()
        for session_id in (first, second):
            await call(client, "wait_session", session_id=session_id, timeout_s=10)
        assert value(metrics, "hydra_sessions", status="awaiting_approval") == 2
        assert value(metrics, "hydra_sessions", status="running") == 0
        assert value(metrics, "hydra_queue_length") == 0


async def test_index_lag_follows_the_indexer(client: Client, metrics: HydraMetrics) -> None:
    services = metrics.services
    assert services is not None
    await eventually(lambda: value(metrics, "hydra_index_lag_events") == 0)
    services.indexer.stop()
    await call(client, "log_context", note="indexing is paused")
    assert value(metrics, "hydra_index_lag_events") == 1
    services.indexer.start()
    await eventually(lambda: value(metrics, "hydra_index_lag_events") == 0)


async def test_container_starts_and_failures_are_counted_by_cause(
    client: Client, metrics: HydraMetrics, sandbox: FakeSandbox, workdir: Path
) -> None:
    starts = value(metrics, "hydra_container_starts_total")
    cancelled = value(metrics, "hydra_container_failures_total", reason="cancelled")
    await spawn_and_wait(client, workdir, "fine")
    sandbox.gate = asyncio.Event()
    session_id = (await call(client, "spawn_agent", working_dir=str(workdir)))["session_id"]
    await eventually(lambda: len(sandbox.started) == 2)
    await call(client, "terminate_session", session_id=session_id, reason="enough")
    assert (await call(client, "wait_session", session_id=session_id, timeout_s=10))["status"] == "cancelled"
    assert value(metrics, "hydra_container_starts_total") - starts == 2
    assert value(metrics, "hydra_container_failures_total", reason="cancelled") - cancelled == 1
    assert value(metrics, "hydra_container_failures_total", reason="oom") == 0


def test_each_server_has_its_own_registry_and_the_global_one_is_untouched() -> None:
    one, two = HydraMetrics(), HydraMetrics()
    one.container_started()
    assert value(one, "hydra_container_starts_total") == 1
    assert value(two, "hydra_container_starts_total") == 0
    assert prometheus_client.REGISTRY.get_sample_value("hydra_container_starts_total") is None


def test_metrics_route_needs_the_operator_token(
    settings: HydraSettings, sandbox: FakeSandbox, metrics: HydraMetrics
) -> None:
    tokens = AgentTokens(settings.agent_tokens_dir)
    agent_token = tokens.issue("s-agent")
    auth = OperatorOrAgent(HydraTokenVerifier(OPERATOR_TOKEN), AgentTokenVerifier(tokens))
    app = operator_server(settings, sandbox, metrics=metrics, auth=auth).http_app(path="/mcp")
    with TestClient(app) as http:
        missing = http.get("/metrics")
        assert missing.status_code == 401 and missing.headers["www-authenticate"].startswith("Bearer")
        assert http.get("/metrics", headers={"Authorization": "Bearer wrong"}).status_code == 401
        assert http.get("/metrics", headers={"Authorization": f"Bearer {agent_token}"}).status_code == 403
        scraped = http.get("/metrics", headers={"Authorization": f"Bearer {OPERATOR_TOKEN}"})
        assert scraped.status_code == 200
        assert scraped.headers["content-type"].startswith("text/plain; version=")
        body = scraped.text
        assert 'hydra_sessions{status="queued"} 0.0' in body  # the services are attached over HTTP too
        assert "hydra_index_lag_events" in body and "# TYPE hydra_tool_call_duration_seconds histogram" in body
        assert SECRET not in body
        health = http.get("/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert OPERATOR_TOKEN not in health.text and SECRET not in json.dumps(health.json())


def test_metrics_route_is_open_when_configured_public(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, sandbox: FakeSandbox, metrics: HydraMetrics
) -> None:
    monkeypatch.setenv("HYDRA_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("HYDRA_METRICS_PUBLIC", "true")
    app = operator_server(load_settings(), sandbox, metrics=metrics, auth=HydraTokenVerifier(OPERATOR_TOKEN)).http_app(
        path="/mcp"
    )
    with TestClient(app) as http:
        scraped = http.get("/metrics")
        assert scraped.status_code == 200 and "hydra_sessions" in scraped.text


def test_metrics_route_is_closed_without_a_token_verifier(
    settings: HydraSettings, sandbox: FakeSandbox, metrics: HydraMetrics
) -> None:
    app = operator_server(settings, sandbox, metrics=metrics).http_app(path="/mcp")
    with TestClient(app) as http:
        assert http.get("/metrics").status_code == 401
        assert http.get("/metrics", headers={"Authorization": "Bearer anything"}).status_code == 401
        assert http.get("/healthz").status_code == 200


class OperatorOrAgent(TokenVerifier):
    """Both kinds of token on one app, to check that /metrics tells them apart."""

    def __init__(self, operator: TokenVerifier, agent: TokenVerifier) -> None:
        super().__init__()
        self.operator, self.agent = operator, agent

    async def verify_token(self, token: str) -> AccessToken | None:
        return await self.operator.verify_token(token) or await self.agent.verify_token(token)


def test_model_tokens_and_spent_budgets_are_counted_from_the_gateways_events() -> None:
    metrics = HydraMetrics()
    usage = {"input_tokens": 30, "output_tokens": 12, "total_tokens": 42}
    for counter, (gateway, data) in enumerate(
        [("model_usage", {"model_usage": usage}), ("model_usage", {"model_usage": usage}), ("model_budget_spent", {})]
    ):
        draft = EventDraft(type="status", text="x", data={"gateway": gateway, **data})
        metrics.record_event(Event.from_draft(draft, SessionRef(session_id="s-0123456789ab"), counter))
    assert value(metrics, "hydra_model_tokens_total", kind="input") == 60
    assert value(metrics, "hydra_model_tokens_total", kind="output") == 24
    assert value(metrics, "hydra_model_budgets_spent_total") == 1
