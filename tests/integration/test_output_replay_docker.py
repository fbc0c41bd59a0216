"""A real container's log, coalesced into output events, read by a server that dies mid-group and by the
next one, which replays Docker's log from the start and groups it differently: every line is recorded
exactly once, in order."""

from __future__ import annotations

import contextlib
import uuid
from pathlib import Path

import pytest

from hydra_sandbox.codex_events import CodexEventParser
from hydra_sandbox.events import EventDraft, SessionRef
from hydra_sandbox.journal import Journal
from hydra_sandbox.masking import SecretMasker
from hydra_sandbox.policy import ResourceLimits
from hydra_sandbox.recorder import Recorder
from hydra_sandbox.sandbox.backends.docker.runtime import DockerRuntime
from hydra_sandbox.sandbox.coalesce import LineGroups
from hydra_sandbox.sandbox.pipeline import OutputPipeline
from hydra_sandbox.sandbox.spec import LABEL_ROLE, LABEL_SESSION, ContainerSpec
from hydra_sandbox.sandbox.supervisor import supervise

pytestmark = pytest.mark.docker

SCRIPT = (
    'for i in $(seq 1 3000); do echo "line $i" >&2; done; sleep 3; '
    'for i in $(seq 3001 6000); do echo "line $i" >&2; done'
)


def server(path: Path, max_lines: int) -> tuple[Journal, Recorder, OutputPipeline, list[int]]:
    journal = Journal(path)
    recorder = Recorder(journal, SecretMasker())
    recorded = [0]

    async def sink(draft: EventDraft) -> None:
        event = await recorder.record(
            SessionRef(session_id="s-1"), draft.model_copy(update={"data": {**draft.data, "run": 1}})
        )
        if event is not None:
            recorded[0] += int(event.data.get("lines", 1))

    masker = SecretMasker()
    pipeline = OutputPipeline(masker, CodexEventParser([], masker.mask), sink, groups=LineGroups(max_lines=max_lines))
    return journal, recorder, pipeline, recorded


async def test_a_server_replaying_a_containers_log_after_dying_mid_group_records_each_line_once(
    agent_image: str, tmp_path: Path
) -> None:
    runtime = DockerRuntime()
    spec = ContainerSpec(
        image=agent_image,
        argv=["bash", "-c", SCRIPT],
        user="1234:1234",
        labels={LABEL_SESSION: f"s-{uuid.uuid4().hex[:12]}", LABEL_ROLE: "agent", "hydra.test": "1"},
        limits=ResourceLimits(memory_mb=256, pids=64),
    )
    cid = await runtime.create(spec)
    path = tmp_path / "journal.sqlite3"
    try:
        await runtime.start(cid)
        journal, recorder, pipeline, recorded = server(path, max_lines=700)
        await recorder.track(SessionRef(session_id="s-1"), None)
        async with contextlib.aclosing(runtime.stream_logs(cid)) as logs:
            async for stream, chunk in logs:
                await pipeline.feed(stream, chunk)
                if recorded[0] >= 1_000:
                    break  # the server dies: its open group is never recorded
        pipeline.discard()
        journal.close()
        assert 1_000 <= recorded[0] < 3_000

        journal, recorder, pipeline, recorded = server(path, max_lines=450)
        await recorder.track(SessionRef(session_id="s-1"), None)
        outcome = await supervise(runtime, cid, timeout_s=120, max_output_bytes=10_000_000, on_output=pipeline.feed)
        await pipeline.close()
        events = journal.events("s-1")
        journal.close()
    finally:
        await runtime.remove(cid)
    assert outcome.status == "completed", outcome.reason
    lines = [line for e in events if e.type == "output" for line in e.text.split("\n")]
    assert lines == [f"line {i}" for i in range(1, 6001)]  # groups of 700, then of 450: one straddled
