"""Runs of tiny output lines become few ``output`` events: no byte lost, order with Codex events kept,
each line masked on its own (and the group never again), bounded by size, lines and time, and a
re-attach that replays from the middle of a group records exactly the lines that were missing."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

from hydra_sandbox.codex_events import CodexEventParser
from hydra_sandbox.events import EventDraft, SessionRef
from hydra_sandbox.journal import Journal
from hydra_sandbox.masking import SecretMasker
from hydra_sandbox.recorder import Recorder, mask_draft
from hydra_sandbox.sandbox.coalesce import MAX_GROUP_CHARS, LineGroups, output_draft
from hydra_sandbox.sandbox.pipeline import STDERR_SEQ_BASE, OutputPipeline
from hydra_sandbox.sandbox.spec import ContainerInfo, LogStream
from hydra_sandbox.sandbox.supervisor import supervise

SECRET = "hunter2-known-secret-value"
TURN = json.dumps({"type": "turn.started"})


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def pipeline_into(drafts: list[EventDraft], groups: LineGroups | None = None, masker: SecretMasker | None = None):  # type: ignore[no-untyped-def]
    masker = masker or SecretMasker()

    async def sink(draft: EventDraft) -> None:
        drafts.append(draft)

    return OutputPipeline(masker, CodexEventParser([], masker.mask), sink, groups=groups or LineGroups(FakeClock()))


async def feed_chunks(pipeline: OutputPipeline, stream: LogStream, data: bytes, size: int = 4096) -> None:
    for start in range(0, len(data), size):
        await pipeline.feed(stream, data[start : start + size])


def lines_of(drafts: list[EventDraft]) -> list[str]:
    return [line for d in drafts if d.type == "output" for line in d.text.split("\n")]


async def test_a_flood_of_ten_thousand_tiny_lines_is_a_few_events_holding_every_line() -> None:
    drafts: list[EventDraft] = []
    pipeline = pipeline_into(drafts)
    await feed_chunks(pipeline, "stderr", b"".join(f"{i % 10}\n".encode() for i in range(10_000)))
    await pipeline.close()
    assert len(drafts) <= 3, f"{len(drafts)} events for 10,000 lines"
    assert lines_of(drafts) == [str(i % 10) for i in range(10_000)]
    assert sum(d.data["lines"] for d in drafts) == 10_000
    assert drafts[-1].data["seq"] == STDERR_SEQ_BASE + 9_999 and drafts[0].data["first_line_seq"] == STDERR_SEQ_BASE
    assert all(d.tags == ["stderr"] and d.data["stream"] == "stderr" for d in drafts)


async def test_plain_stdout_lines_are_output_and_codex_events_keep_their_place_among_them() -> None:
    drafts: list[EventDraft] = []
    pipeline = pipeline_into(drafts)
    await pipeline.feed("stdout", f"warming up\nstill warming\n{TURN}\nafter the turn\n".encode())
    await pipeline.close()
    assert [(d.type, d.text) for d in drafts] == [
        ("output", "warming up\nstill warming"),
        ("status", "turn started"),
        ("output", "after the turn"),
    ]
    assert [d.data["seq"] for d in drafts] == [1, 2, 3] and drafts[2].data["first_line_seq"] == 3


async def test_a_line_of_the_other_stream_closes_the_group_so_the_order_of_lines_is_kept() -> None:
    drafts: list[EventDraft] = []
    pipeline = pipeline_into(drafts)
    await pipeline.feed("stdout", b"out 1\nout 2\n")
    await pipeline.feed("stderr", b"err 1\n")
    await pipeline.feed("stdout", b"out 3\n")
    await pipeline.close()
    assert [(d.data["stream"], d.text) for d in drafts] == [
        ("stdout", "out 1\nout 2"),
        ("stderr", "err 1"),
        ("stdout", "out 3"),
    ]


async def test_each_line_of_a_group_is_masked_on_its_own_and_the_group_is_not_masked_again() -> None:
    masker = SecretMasker([SECRET])
    drafts: list[EventDraft] = []
    pipeline = pipeline_into(drafts, masker=masker)
    token = "sk-proj-Ab3dEf6hIj9kLm2nOp5qRs8tUv1wXy4zAb7cDe0fGh3iJk"
    lines = ["plain line", f"the value is {SECRET} here", f"token {token}", "x"]
    await pipeline.feed("stderr", ("\n".join(lines) + "\n").encode())
    await pipeline.close()
    assert len(drafts) == 1 and drafts[0].text_masked
    assert drafts[0].text.split("\n") == [masker.mask(line) for line in lines]
    assert SECRET not in drafts[0].text and "sk-proj-" not in drafts[0].text and "[MASKED:" in drafts[0].text


async def test_a_private_key_printed_line_by_line_inside_a_group_is_masked_whole() -> None:
    body = "MIIEpAIBAAKCAQEA1c7+9z5Pad7OejecsQ0bu3aumge8"
    key = f"-----BEGIN RSA PRIVATE KEY-----\n{body}\n{body}\n-----END RSA PRIVATE KEY-----"
    for stream in ("stdout", "stderr"):
        drafts: list[EventDraft] = []
        pipeline = pipeline_into(drafts)
        await feed_chunks(pipeline, stream, f"before\n{key}\nafter\n".encode(), size=7)  # type: ignore[arg-type]
        await pipeline.close()
        blob = str([d.model_dump() for d in drafts])
        assert body not in blob and "[MASKED:private-key]" in blob, stream
        assert lines_of(drafts)[0] == "before" and lines_of(drafts)[-1] == "after"


def test_the_recorder_masks_a_group_once_and_a_caller_cannot_claim_its_text_is_masked() -> None:
    masker = SecretMasker([SECRET])
    group = EventDraft(type="output", text=f"already masked, left as is: {SECRET}")
    group.mark_text_masked()
    assert mask_draft(masker, group).text == group.text  # the pipeline's word: no second pass
    from_wire = EventDraft.model_validate_json(group.model_dump_json())
    assert not from_wire.text_masked and SECRET not in mask_draft(masker, from_wire).text
    copied = group.model_copy(update={"data": {"run": 1}})  # the manager's sink copies drafts
    assert copied.text_masked


async def test_a_group_is_sent_at_the_end_of_a_chunk_once_its_time_bound_passed() -> None:
    clock = FakeClock()
    drafts: list[EventDraft] = []
    pipeline = pipeline_into(drafts, groups=LineGroups(clock, window_s=0.2))
    await pipeline.feed("stderr", b"one\n")
    clock.now = 0.1
    await pipeline.feed("stderr", b"two\n")
    assert drafts == []
    clock.now = 0.25
    await pipeline.feed("stderr", b"three\n")
    assert [d.text for d in drafts] == ["one\ntwo\nthree"]
    await pipeline.close()
    pipeline.discard()


async def test_a_group_left_open_is_sent_by_the_timer_when_no_more_output_comes() -> None:
    drafts: list[EventDraft] = []
    pipeline = pipeline_into(drafts, groups=LineGroups(FakeClock(), window_s=0.01))
    await pipeline.feed("stderr", b"a lone line\n")
    deadline = time.monotonic() + 10
    while not drafts and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert [d.text for d in drafts] == ["a lone line"]
    await pipeline.close()
    assert len(drafts) == 1


async def test_groups_stay_within_the_size_and_line_bounds() -> None:
    drafts: list[EventDraft] = []
    pipeline = pipeline_into(drafts, groups=LineGroups(FakeClock(), max_chars=100, max_lines=7))
    data = b"".join(f"line {i:03}\n".encode() for i in range(200)) + b"w" * 150 + b"\n"
    await feed_chunks(pipeline, "stdout", data, size=33)
    await pipeline.close()
    assert all(d.data["lines"] <= 7 for d in drafts)
    assert all(len(d.text) <= 100 for d in drafts[:-1]) and drafts[-1].text == "w" * 150  # a long line alone
    assert lines_of(drafts) == [f"line {i:03}" for i in range(200)] + ["w" * 150]


def test_the_default_group_bound_is_sixty_four_kib_of_text() -> None:
    groups = LineGroups(FakeClock())
    closed = [d for i in range(40_000) for d in groups.add("stderr", "x" * 9, i)] + groups.flush()
    assert max(len(d.text) for d in closed) <= MAX_GROUP_CHARS == 64 * 1024
    assert sum(d.data["lines"] for d in closed) == 40_000


async def test_a_recorded_group_straddled_by_a_replay_is_trimmed_to_the_lines_not_yet_recorded(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "journal.sqlite3")
    recorder, ref = Recorder(journal, SecretMasker()), SessionRef(session_id="s-1")
    await recorder.track(ref, None)

    def group(first: int, last: int) -> EventDraft:
        text = "\n".join(f"line {i}" for i in range(first, last + 1))
        data = {"run": 1, "stream": "stdout", "seq": last, "lines": last - first + 1, "first_line_seq": first}
        return EventDraft(type="output", text=text, data=data)

    assert await recorder.record(ref, group(0, 4)) is not None
    assert await recorder.record(ref, group(0, 2)) is None  # wholly recorded before
    trimmed = await recorder.record(ref, group(3, 9))
    assert trimmed is not None and trimmed.text == "\n".join(f"line {i}" for i in range(5, 10))
    assert trimmed.data["first_line_seq"] == 5 and trimmed.data["lines"] == 5 and trimmed.data["seq"] == 9
    journal.close()


async def test_a_replay_from_the_start_after_a_crash_mid_group_records_each_line_exactly_once(tmp_path: Path) -> None:
    stream = b"".join(f"out {i}\n".encode() for i in range(500)) + f"{TURN}\n".encode()
    stream += b"".join(f"more {i}\n".encode() for i in range(300))
    ref, path = SessionRef(session_id="s-1"), tmp_path / "journal.sqlite3"

    async def run(upto: int, max_lines: int, *, close: bool) -> None:
        journal = Journal(path)
        recorder = Recorder(journal, SecretMasker())
        await recorder.track(ref, None)

        async def sink(draft: EventDraft) -> None:
            await recorder.record(ref, draft.model_copy(update={"data": {**draft.data, "run": 1}}))

        masker = SecretMasker()
        groups = LineGroups(FakeClock(), max_lines=max_lines)
        pipeline = OutputPipeline(masker, CodexEventParser([], masker.mask), sink, groups=groups)
        await feed_chunks(pipeline, "stdout", stream[:upto], size=101)
        if close:
            await pipeline.close()
        pipeline.discard()
        journal.close()

    await run(len(stream) // 3, max_lines=37, close=False)  # the server dies with a group still open
    await run(len(stream), max_lines=53, close=True)  # the next one replays the whole log, grouped otherwise
    events = Journal(path).events("s-1")
    expected = [f"out {i}" for i in range(500)] + [f"more {i}" for i in range(300)]
    assert lines_of(events) == expected  # type: ignore[arg-type]
    assert [e.type for e in events].count("status") == 1
    assert len(events) < 100


class _StderrRuntime:
    def __init__(self, chunks: list[bytes]) -> None:
        self.chunks = chunks

    async def stream_logs(self, container_id: str) -> AsyncIterator[tuple[LogStream, bytes]]:
        for chunk in self.chunks:
            yield "stderr", chunk

    async def stop(self, container_id: str, grace_s: float = 10.0) -> None:
        return None

    async def wait(self, container_id: str, timeout_s: float | None = None) -> int | None:
        return 0

    async def inspect(self, container_id: str) -> ContainerInfo:
        return ContainerInfo(id=container_id, name="c", status="exited")


async def test_the_output_cap_keeps_exactly_its_bytes_in_few_events() -> None:
    data = b".\n" * 5_000
    drafts: list[EventDraft] = []
    pipeline = pipeline_into(drafts)
    chunks = [data[i : i + 999] for i in range(0, len(data), 999)]
    outcome = await supervise(
        _StderrRuntime(chunks), "c1", timeout_s=5, max_output_bytes=4_001, on_output=pipeline.feed, grace_s=0.1  # type: ignore[arg-type]
    )
    await pipeline.close()
    assert outcome.truncated and outcome.output_bytes == len(data)
    kept = lines_of(drafts)
    assert kept[:-1] == ["."] * 2_001  # 4,001 bytes: 2,000 whole lines and the half of one
    assert kept[-1] == "[hydra: output truncated after 4001 bytes; the agent was stopped]"
    assert len(drafts) <= 2


def test_hydra_logs_shows_a_group_with_its_stream_and_line_count() -> None:
    from hydra_sandbox.cli import sessions_cmd
    from hydra_sandbox.events import Event

    group = output_draft("stderr", ["one", "two", "three"], 7, 9)
    event = Event.from_draft(group, SessionRef(session_id="s-1"), 4)
    assert "[stderr, 3 line(s)] one ⏎ two ⏎ three" in sessions_cmd._line(event)


def test_a_run_of_short_lines_is_masked_at_once_exactly_as_line_by_line_and_a_key_still_held() -> None:
    from hydra_sandbox.masking import LineMasker

    masker = SecretMasker([SECRET])
    lines = [".", f"x {SECRET} y", "short", "ghp_1234567890abcdefghijklmnopqrstuvwxyzAB"[:15]]
    assert LineMasker(masker).feed_lines(lines) == [masker.mask(line) for line in lines]
    body = "MIIEpAIBAAKCAQEA1c7+9z5Pad7OejecsQ0bu3aumge8"
    held = LineMasker(masker)
    assert held.feed_lines([".", "-----BEGIN RSA PRIVATE KEY-----", body]) == ["."] and held.holding
    assert body not in "\n".join(held.feed_lines(["-----END RSA PRIVATE KEY-----", "after"]))


def test_an_output_group_is_exported_imported_and_indexed_as_one_bounded_document(tmp_path: Path) -> None:
    from hydra_sandbox.maintenance import export_jsonl, import_jsonl
    from hydra_sandbox.policy import PolicyCatalog
    from hydra_sandbox.profiles import ProfileCatalog
    from hydra_sandbox.settings import load_settings
    from hydra_sandbox.store import InMemoryStore

    groups = LineGroups(FakeClock())
    drafts = [d for i in range(20_000) for d in groups.add("stderr", f"line {i}", i)] + groups.flush()
    session = "s-000000000001"
    settings = load_settings(data_home=tmp_path / "data")
    catalogs = {"policies": PolicyCatalog(settings.policy_dirs), "profiles": ProfileCatalog(settings.profile_dirs)}
    with Journal(tmp_path / "a.sqlite3") as journal, Journal(tmp_path / "b.sqlite3") as other:
        journal.save_session(
            session, status="completed", profile_id="dev", parent_session_id=None, data={"policy": {"name": "default"}}
        )
        journal.append_many(SessionRef(session_id=session), drafts)
        assert export_jsonl(journal, tmp_path / "out.jsonl") == len(drafts)
        assert import_jsonl(other, tmp_path / "out.jsonl", **catalogs).events_added == len(drafts)
        events = other.events(session)
    assert lines_of(events) == [f"line {i}" for i in range(20_000)]  # type: ignore[arg-type]
    store = InMemoryStore()
    store.record_events(events)
    hits = store.query_by_session(session)
    assert len(hits) == len(events) < 20 and all(len(h.text) <= MAX_GROUP_CHARS for h in hits)
