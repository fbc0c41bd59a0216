"""Secrets along the whole path: every secret of the masking corpus, plus a configured secret and its
base64 and URL-encoded forms, is emitted by an agent in every way it can speak (command lines, output,
messages, errors, a failed run's reason, file names and file contents of its diff) and streamed through
the real OutputPipeline split at every offset. No raw value may then be found in the journal's bytes, the
Chroma index, any MCP tool result or resource, the CLI's output or an export file.

The corpus holds the two cases issue 14 found leaking whole: a GCP service-account key file (the private
key a JSON string with ``\\n`` escapes) and the head of a PEM file (no END line); each line of their key
material is looked for on its own.

Counts are printed and written to ``tests/adversarial/.results/test_secrets_whole_path.json``.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import re
import urllib.parse
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import yaml
from fastmcp import Client
from typer.testing import CliRunner

from hydra_sandbox.authority import OPERATOR
from hydra_sandbox.codex_events import CodexEventParser
from hydra_sandbox.events import EventDraft
from hydra_sandbox.masking import SecretMasker
from hydra_sandbox.sandbox import RunResult
from hydra_sandbox.sandbox.pipeline import OutputPipeline
from hydra_sandbox.services import Services, known_secrets
from hydra_sandbox.settings import HydraSettings, load_settings
from tests.adversarial.results import model_dir, scenario_recorder
from tests.fake_sandbox import FakeRun, FakeSandbox, command, message
from tests.hydra_server import REAL_STORE
from tests.hydra_server import serve as serve_hydra
from tests.mcp_calls import call

pytestmark = pytest.mark.adversarial

CORPUS = yaml.safe_load((Path(__file__).parent.parent / "data" / "masking_corpus.yaml").read_text())
KNOWN = "hydra-known/secret+value=7f3a9c21Qz"
scenario = scenario_recorder(__file__)
_MARKER = re.compile(r"\[MASKED:[a-z0-9-]+\]")


def secret_texts() -> list[str]:
    """Every corpus true positive, the configured secret, and its base64 and URL-encoded forms."""
    texts = [text for texts in CORPUS["true_positives"].values() for text in texts]
    texts += [
        KNOWN,
        base64.b64encode(KNOWN.encode()).decode(),
        base64.b64encode(b"x" + KNOWN.encode()).decode(),
        urllib.parse.quote(KNOWN, safe=""),
    ]
    return texts


def secret_values(text: str, masker: SecretMasker) -> list[str]:
    """The parts of ``text`` masking removes (the secrets themselves, without their context): the
    masked text's literal pieces, aligned against the original."""
    masked = masker.mask(text)
    pieces = _MARKER.split(masked)
    assert len(pieces) > 1, f"the masker does not mask {text!r} at all"
    pattern = "(.+?)".join(re.escape(p) for p in pieces)
    match = re.fullmatch(pattern, text, re.DOTALL)
    assert match is not None
    values = list(match.groups())
    for value in list(values):  # key material of a multi-line block, line by line (raw or \n-escaped in JSON)
        lines = [part for line in value.splitlines() for part in line.split("\\n")]
        values += [line for line in lines if len(line) >= 12 and "-----" not in line]
    return values


def test_the_corpus_holds_the_cases_that_leaked_whole() -> None:
    texts = secret_texts()
    assert any('"type": "service_account"' in t and "\\n" in t for t in texts)
    assert any(t.startswith("-----BEGIN PRIVATE KEY-----") and "-----END" not in t for t in texts)
    masker = SecretMasker([KNOWN])
    for text in texts:
        for line in text.replace("\\n", "\n").splitlines():
            if len(line) >= 40 and line.isascii() and line.replace("+", "").replace("/", "").replace("=", "").isalnum():
                assert line not in masker.mask(text), f"key line left in {text[:60]!r}"


def needles(masker: SecretMasker) -> dict[str, str]:
    """Every raw value that must never appear, with its JSON-escaped form (how stored JSON holds it)."""
    out: dict[str, str] = {}
    for text in secret_texts():
        for value in secret_values(text, masker):
            out[value] = value
            out[json.dumps(value)[1:-1]] = value
            out[json.dumps(value, ensure_ascii=False)[1:-1]] = value
    return out


def leaks(blob: str | bytes, found_in: str, forbidden: dict[str, str]) -> list[str]:
    if isinstance(blob, bytes):
        blob = blob.decode("utf-8", errors="replace")
    return [f"{found_in}: {value[:40]!r}" for form, value in forbidden.items() if form in blob]


# -- the streaming pipeline, split everywhere ------------------------------------------------------


def codex_lines(secret: str) -> tuple[bytes, bytes]:
    """Codex JSONL stdout and plain stderr in which ``secret`` appears in every field an agent fills."""
    items = [
        {
            "type": "item.completed",
            "item": {
                "id": "i1",
                "type": "command_execution",
                "command": f"echo {secret}",
                "aggregated_output": f"out {secret}\n",
                "exit_code": 0,
            },
        },
        {"type": "item.completed", "item": {"id": "i2", "type": "agent_message", "text": f"found {secret}"}},
        {"type": "item.completed", "item": {"id": "i3", "type": "error", "message": f"failed on {secret}"}},
        {"type": "turn.failed", "error": {"message": f"boom {secret}"}},
        {"type": "error", "message": f"stream error {secret}"},
    ]
    stdout = "\n".join(json.dumps(i) for i in items) + f"\nnot json {secret}\n"
    stderr = f"warning: {secret}\nsecond line\n"
    return stdout.encode(), stderr.encode()


async def run_pipeline(masker: SecretMasker, stdout: bytes, stderr: bytes, cuts: list[int]) -> list[EventDraft]:
    drafts: list[EventDraft] = []

    async def sink(draft: EventDraft) -> None:
        drafts.append(draft)

    pipeline = OutputPipeline(masker, CodexEventParser(["pytest"], masker.mask), sink)
    for stream, data in (("stdout", stdout), ("stderr", stderr)):
        previous = 0
        for cut in [*cuts, len(data)]:
            cut = min(cut, len(data))
            if cut > previous:
                await pipeline.feed(stream, data[previous:cut])  # type: ignore[arg-type]
                previous = cut
    await pipeline.close()
    return drafts


async def test_output_pipeline_and_masking_stream_split_at_every_offset_leak_nothing() -> None:
    masker = SecretMasker([KNOWN])
    forbidden = needles(masker)
    found: list[str] = []
    with scenario("pipeline_split_everywhere") as counts:
        counts.update(secrets=len(secret_texts()), forbidden_values=len(set(forbidden.values())), runs=0)
        for secret in secret_texts():
            stdout, stderr = codex_lines(secret)
            longest = max(len(stdout), len(stderr))
            plans = [list(range(1, longest))] + [[k] for k in range(1, longest)]  # byte by byte, then each offset
            for cuts in plans:
                drafts = await run_pipeline(masker, stdout, stderr, cuts)
                counts["runs"] += 1
                blob = json.dumps([d.model_dump(mode="json") for d in drafts])
                found += leaks(blob, f"pipeline cuts={cuts[:3]}", forbidden)
                assert "[MASKED:" in blob
            raw = f"prefix {secret} suffix\n".encode()
            for k in range(len(raw) + 1):  # MaskingStream over bytes: byte by byte is k == 1 below
                stream = masker.stream()
                out = stream.feed_bytes(raw[:k]) + stream.feed_bytes(raw[k:]) + stream.flush()
                found += leaks(out, f"stream split {k}", forbidden)
                counts["runs"] += 1
            stream = masker.stream()
            out = "".join(stream.feed_bytes(raw[i : i + 1]) for i in range(len(raw))) + stream.flush()
            found += leaks(out, "stream byte by byte", forbidden)
        counts["leaks"] = len(found)
        assert not found, found[:10]


# -- the whole path: agent -> journal, index, tools, resources, CLI, export --------------------------


@pytest.fixture
def workdir(tmp_path: Path) -> Path:
    path = tmp_path / "repo"
    path.mkdir()
    (path / "app.py").write_text("x = 1\n")
    (path / "config.py").write_text("DEBUG = False\n")
    return path


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HydraSettings:
    monkeypatch.setenv("HYDRA_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("HYDRA_EMBEDDING_MODEL_DIR", str(model_dir()))
    monkeypatch.setenv("HYDRA_SECRETS", json.dumps([KNOWN]))
    monkeypatch.setenv("HYDRA_AGENT_MCP", "false")
    return load_settings()


def leaky_runs() -> dict[str, FakeRun]:
    """One scripted run per secret, speaking it every way an agent can, and one run that fails with
    every secret in its reason."""
    runs: dict[str, FakeRun] = {}
    for n, secret in enumerate(secret_texts()):
        name_safe = secret.replace("\n", " ")
        files = {
            "config.py": f"DEBUG = False\nVALUE = '''{secret}'''\n",  # a modified file
            f"notes/added_{n}.txt": f"line one\n{secret}\nline three\n",  # an added file
        }
        if "/" not in secret and len(name_safe.encode()) < 200:
            files[f"leak_{n}_{name_safe}.txt"] = "named after a secret\n"  # a file NAME
            files[f"secrets/{name_safe}.key"] = "refused by policy, named after a secret\n"
        runs[f"LEAK{n:03d}"] = FakeRun(
            drafts=[
                command(f"curl -H 'auth: {secret}' https://api.invalid", 1, f"error: rejected {secret}"),
                message(f"I found {secret} in the config"),
                EventDraft(type="error", text=f"agent error: {secret}", data={"message": secret, secret: "as a key"}),
                EventDraft(
                    type="decision",
                    text=f"decided to rotate {secret}",
                    tags=[secret[:40]],
                    related_files=[f"src/{secret}"],
                ),
            ],
            files=files,
        )
    every = " | ".join(secret_texts())
    runs["FAILS"] = FakeRun(
        drafts=[message("about to fail")],
        result=RunResult(status="failed", reason=f"container exited: {every}", exit_code=1),
    )
    return runs


@contextlib.asynccontextmanager
async def serve(settings: HydraSettings, sandbox: FakeSandbox) -> AsyncIterator[tuple[Client, Services]]:
    async with serve_hydra(settings, sandbox, store=REAL_STORE) as hydra:  # the real embedded ChromaStore
        yield hydra.client, hydra.services


def chroma_everything(settings: HydraSettings) -> tuple[str, int]:
    """Every document and metadata the index holds, read straight from its collections, and how many
    there are. The server's index process holds the directory while it runs: read after it stops."""
    from hydra_sandbox.chroma_store import ChromaStore

    store = ChromaStore.from_settings(settings)
    try:
        out = []
        for collection in store._collections():
            got = collection.get(include=["documents", "metadatas"])
            out.append(json.dumps({"ids": got["ids"], "documents": got["documents"], "metadatas": got["metadatas"]}))
        return "\n".join(out), store.count()
    finally:
        store.close()


def files_under(root: Path) -> Iterator[tuple[Path, bytes]]:
    for path in sorted(root.rglob("*")):
        if path.is_file():
            yield path, path.read_bytes()


async def test_no_secret_survives_anywhere_an_agent_can_put_it(
    settings: HydraSettings, workdir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    masker = SecretMasker(known_secrets(settings))
    forbidden = needles(masker)
    sandbox = FakeSandbox(mask=masker.mask, layers=tmp_path / "layers")
    for marker, run in leaky_runs().items():
        sandbox.script(marker, run)
    found: list[str] = []
    outputs: list[tuple[str, str]] = []
    with scenario("whole_path") as counts:
        counts.update(secrets=len(secret_texts()), forbidden_values=len(set(forbidden.values())))
        async with serve(settings, sandbox) as (client, services):
            ids: list[str] = []
            for marker in sandbox.runs:
                spawned = await call(client, "spawn_agent", working_dir=str(workdir), custom_prompt=marker)
                ids.append(spawned["session_id"])
                outputs.append(("spawn_agent", json.dumps(spawned)))
            for secret in secret_texts():
                logged = await call(client, "log_context", note=f"host note: {secret}", tags=["leak"])
                outputs.append(("log_context", json.dumps(logged)))
            for session_id in ids:
                waited = await call(client, "wait_session", session_id=session_id, timeout_s=30)
                assert waited["finished"]
                outputs.append(("wait_session", json.dumps(waited)))
            await asyncio.to_thread(services.indexer.catch_up, 120)
            statuses = {}
            for session_id in ids:
                record = services.manager.get(session_id, OPERATOR)
                statuses[session_id] = record.status.value
                outputs.append(
                    ("tail_logs", json.dumps(await call(client, "tail_logs", session_id=session_id, limit=1000)))
                )
                outputs.append(
                    ("summarize_session", json.dumps(await call(client, "summarize_session", session_id=session_id)))
                )
                resource = await client.read_resource(f"hydra://sessions/{session_id}")
                outputs.append(("hydra://sessions", resource[0].text))
                checklist = await client.read_resource(f"hydra://checklists/{session_id}")
                outputs.append(("hydra://checklists", checklist[0].text))
                if record.status.value == "awaiting_approval":
                    diff = await call(client, "get_diff", session_id=session_id)
                    assert diff["files"], f"{session_id}: the scripted files made no diff"
                    outputs.append(("get_diff", json.dumps(diff)))
            assert "failed" in statuses.values() and "awaiting_approval" in statuses.values()
            outputs.append(("list_sessions", json.dumps(await call(client, "list_sessions", limit=1000))))
            queries = [*secret_texts(), "secret key token password", "curl auth rejected", "host note"]
            for query in queries:
                outputs.append(
                    ("search_context", json.dumps(await call(client, "search_context", query=query, limit=50)))
                )
            outputs.append(("hydra://status", (await client.read_resource("hydra://status"))[0].text))
            counts["index_documents"] = await asyncio.to_thread(services.store.count)
            assert counts["index_documents"] == services.journal.count()
            for path, raw in files_under(settings.data_home):  # while the server runs: journal WAL included
                found += leaks(raw, f"live file {path.relative_to(settings.data_home)}", forbidden)
            counts["live_data_files_scanned"] = sum(1 for _ in files_under(settings.data_home))
        index_blob, held = chroma_everything(settings)
        assert held == counts["index_documents"]
        found += leaks(index_blob, "chroma documents", forbidden)
        counts["sessions"] = len(ids)
        counts["tool_and_resource_results"] = len(outputs)
        for where, blob in outputs:
            found += leaks(blob, where, forbidden)

        # the CLI, against the same data home, with no server running (in-process tools for `search`)
        monkeypatch.setattr("hydra_sandbox.services._default_sandbox", lambda *a, **k: FakeSandbox())
        from hydra_sandbox.cli import app

        runner = CliRunner()
        export = tmp_path / "export.jsonl"
        invocations = [["sessions", "logs", sid] for sid in ids] + [["sessions", "logs", sid, "--json"] for sid in ids]
        invocations += [["sessions", "show", ids[-1], "--json"], ["sessions", "list"]]
        invocations += [["search", q, "--json"] for q in queries[-3:]] + [["search", "curl auth rejected"]]
        invocations += [["export", str(export)]]
        for args in invocations:
            result = await asyncio.to_thread(
                runner.invoke, app, args, env={"COLUMNS": "400"}
            )  # the CLI runs its own loop
            assert result.exit_code == 0, f"hydra {' '.join(args)}: {result.output}"
            found += leaks(result.output, f"hydra {args[0]} {args[1][:12]}", forbidden)
        counts["cli_invocations"] = len(invocations)
        found += leaks(export.read_bytes(), "export file", forbidden)
        counts["export_lines"] = len(export.read_text().splitlines())

        data_home = settings.data_home
        for path, raw in files_under(data_home):
            found += leaks(raw, f"file {path.relative_to(data_home)}", forbidden)
        counts["data_files_scanned"] = sum(1 for _ in files_under(data_home))
        counts["leaks"] = len(found)
        assert not found, "\n".join(sorted({f.split(": ")[0] for f in found}))
