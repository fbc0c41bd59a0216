"""The Kubernetes workspace transport over ``pods/exec`` (backends/kubernetes/exec_transport.py): the
policy-filtered tree goes into the pod's volume through real ``tar -x`` behind the channel protocol, the
agent's tree comes back through real ``tar -c`` into the same overlay form, statuses and digest as the
Docker overlay, within the session's bounds; and the exec request the official client sends, as the mock
API server (kmock) sees it. No cluster: tests/pod_exec_kit.py stands in for the kubelet's exec."""

from __future__ import annotations

import asyncio
import os
import tarfile
from pathlib import Path
from urllib.parse import parse_qs

import kmock
import pytest

from hydra_sandbox.diffing import compute_diff
from hydra_sandbox.errors import RuntimeUnavailableError, WorkspaceError
from hydra_sandbox.sandbox.archive import ROOT_MEMBER, manifest_path
from hydra_sandbox.sandbox.archive_changes import UnpackBounds, stream_limit
from hydra_sandbox.sandbox.backends.kubernetes.exec_channels import CLOSE, STDIN
from hydra_sandbox.sandbox.backends.kubernetes.exec_transport import (
    PUT_COMMAND,
    TAKE_COMMAND,
    PodExecTransport,
    kubernetes_exec,
)
from hydra_sandbox.sandbox.backends.kubernetes.manifests import (
    READY_MARKER,
    WORKSPACE_IN_CONTAINER_NAME,
    WORKSPACE_OUT_CONTAINER_NAME,
)
from hydra_sandbox.sandbox.workspace import StagedWorkspace
from tests.kube_kit import NS, PODS, runtime_for
from tests.pod_exec_kit import LocalPod
from tests.unit.test_workspace_archive import POLICY, edit_as_agent, edit_as_overlay, host, staged

POD = "hydra-s-0123456789ab-0"


def agent_tree(pod: LocalPod) -> Path:
    return pod.volume / ROOT_MEMBER


async def test_the_visible_tree_goes_in_and_the_agents_changes_come_home_as_the_overlay_would_have_them(
    tmp_path: Path,
) -> None:
    src = host(tmp_path)
    via_pod, via_overlay = staged(tmp_path, src), staged(tmp_path, src, "sessions2")
    pod = LocalPod(tmp_path / "volume")
    transport = PodExecTransport(pod.open_exec)
    manifest = await transport.put(POD, via_pod)
    assert pod.execs[0] == (POD, WORKSPACE_IN_CONTAINER_NAME, PUT_COMMAND)
    assert (pod.volume / READY_MARKER).exists(), "the init container was not released"
    shipped = {str(p.relative_to(agent_tree(pod))) for p in agent_tree(pod).rglob("*")}
    assert shipped == set(manifest.entries) and not {".env", "id_ed25519", "secrets"} & shipped
    assert manifest_path(via_pod).exists()
    edit_as_agent(agent_tree(pod))
    result = await transport.take(POD, via_pod)
    assert pod.execs[1] == (POD, WORKSPACE_OUT_CONTAINER_NAME, TAKE_COMMAND)
    edit_as_overlay(via_overlay)
    from_pod, from_overlay = compute_diff(via_pod, POLICY), compute_diff(via_overlay, POLICY)
    assert {f.path: f.status for f in from_pod.files} == {f.path: f.status for f in from_overlay.files}
    assert from_pod.refused == from_overlay.refused and from_pod.digest == from_overlay.digest
    assert result.changed == 12 and result.deleted == 4
    assert not manifest_path(via_pod).exists(), "the spent baseline was kept"


async def test_modes_survive_the_pods_unprivileged_tar(tmp_path: Path) -> None:
    src = host(tmp_path, {"run.sh": "echo\n", "private.txt": "p\n", "lib/x.py": "x\n"})
    os.chmod(src / "run.sh", 0o775)
    os.chmod(src / "private.txt", 0o600)
    os.chmod(src / "lib", 0o750)
    ws = staged(tmp_path, src)
    pod = LocalPod(tmp_path / "volume")
    transport = PodExecTransport(pod.open_exec)
    old_umask = os.umask(0o077)  # what a pod's umask would otherwise do to every mode
    try:
        await transport.put(POD, ws)
    finally:
        os.umask(old_umask)
    tree = agent_tree(pod)
    assert [(tree / p).stat().st_mode & 0o7777 for p in ("run.sh", "private.txt", "lib")] == [0o775, 0o600, 0o750]
    result = await transport.take(POD, ws)
    assert result.changed == result.deleted == 0 and compute_diff(ws, POLICY).files == []


async def test_without_a_stdin_close_tar_ends_at_the_archives_end_blocks(tmp_path: Path) -> None:
    ws = staged(tmp_path, host(tmp_path, {"a.txt": "a\n"}))
    pod = LocalPod(tmp_path / "volume", v5=False)  # v4.channel.k8s.io: stdin cannot be closed
    await PodExecTransport(pod.open_exec).put(POD, ws)
    assert (agent_tree(pod) / "a.txt").read_text() == "a\n" and (pod.volume / READY_MARKER).exists()
    assert not any(frame[0] == CLOSE for frame in pod.sockets[0].sent)


async def test_stdin_is_closed_after_the_archive_on_v5(tmp_path: Path) -> None:
    ws = staged(tmp_path, host(tmp_path, {"a.txt": "a\n"}))
    pod = LocalPod(tmp_path / "volume")
    await PodExecTransport(pod.open_exec).put(POD, ws)
    sent = pod.sockets[0].sent
    assert sent[-1] == bytes([CLOSE, STDIN]) and all(frame[0] == STDIN for frame in sent[:-1])


async def test_an_entry_another_user_owns_is_refused_and_the_agent_never_starts(tmp_path: Path) -> None:
    src = host(tmp_path, {"a.txt": "a\n", "root-only.key": "HIDDEN-KEY\n"})
    ws = staged(tmp_path, src).model_copy(update={"agent_uid": os.getuid() + 4242})
    pod = LocalPod(tmp_path / "volume")
    with pytest.raises(WorkspaceError, match=r"\. is owned by uid .* not the agent's") as caught:
        await PodExecTransport(pod.open_exec).put(POD, ws)
    assert "deny the path" in (caught.value.hint or "")
    assert not (pod.volume / READY_MARKER).exists() and not manifest_path(ws).exists()


async def test_an_extraction_the_pod_fails_is_named_and_the_agent_never_starts(tmp_path: Path) -> None:
    ws = staged(tmp_path, host(tmp_path, {"a.txt": "a\n"}))
    pod = LocalPod(tmp_path / "volume")
    full = ["sh", "-c", "cat >/dev/null; echo 'tar: ws/a.txt: Cannot write: No space left on device' >&2; exit 2"]
    transport = PodExecTransport(lambda p, c, argv: pod.open_exec(p, c, full))
    with pytest.raises(WorkspaceError, match=r"extracting the workspace failed \(tar exited 2\): .*No space left"):
        await transport.put(POD, ws)
    assert not (pod.volume / READY_MARKER).exists() and not manifest_path(ws).exists()


async def test_a_pod_that_stops_reading_mid_archive_is_named_with_what_its_tar_said(tmp_path: Path) -> None:
    src = host(tmp_path, {"a.txt": "a\n"})
    (src / "big.bin").write_bytes(b"x" * (4 << 20))  # more than a pipe holds: the send meets the closed end
    ws = staged(tmp_path, src)
    pod = LocalPod(tmp_path / "volume")
    full = ["sh", "-c", "head -c 100 >/dev/null; echo 'tar: ws/big.bin: No space left on device' >&2; exit 2"]
    transport = PodExecTransport(lambda p, c, argv: pod.open_exec(p, c, full))
    with pytest.raises(WorkspaceError, match=r"stopped taking the workspace .* tar exited 2: .*No space left"):
        await transport.put(POD, ws)
    assert not (pod.volume / READY_MARKER).exists() and not manifest_path(ws).exists()


async def put_and_edit(tmp_path: Path, files: dict[str, str]) -> tuple[PodExecTransport, LocalPod, StagedWorkspace]:
    ws = staged(tmp_path, host(tmp_path, files))
    pod = LocalPod(tmp_path / "volume")
    transport = PodExecTransport(pod.open_exec)
    await transport.put(POD, ws)
    return transport, pod, ws


async def test_a_tree_over_the_sessions_byte_bound_is_cut_off_while_it_is_read(tmp_path: Path) -> None:
    transport, pod, ws = await put_and_edit(tmp_path, {"a.txt": "a\n"})
    bounds = UnpackBounds(max_members=10, max_total_bytes=1 << 20)
    with (agent_tree(pod) / "big.bin").open("wb") as fh:
        fh.truncate(stream_limit(bounds) + (1 << 20))  # past the bound, headers' allowance included
    before = sorted(p.name for p in ws.upper.iterdir())
    with pytest.raises(WorkspaceError, match=f"is over {stream_limit(bounds)} bytes; nothing of it was applied"):
        await transport.take(POD, ws, bounds)
    assert sorted(p.name for p in ws.upper.iterdir()) == before


async def test_a_read_past_the_time_limit_is_refused(tmp_path: Path) -> None:
    transport, _pod, ws = await put_and_edit(tmp_path, {"a.txt": "a\n"})
    transport.timeout_s = -1  # the deadline has passed before the first frame
    with pytest.raises(WorkspaceError, match="took over"):
        await transport.take(POD, ws)


async def test_an_unreadable_tree_fails_the_read_back_and_writes_nothing(tmp_path: Path) -> None:
    transport, pod, ws = await put_and_edit(tmp_path, {"a.txt": "a\n"})
    (agent_tree(pod) / "gone").mkdir()
    os.chmod(agent_tree(pod) / "gone", 0o000)
    if os.getuid() == 0:  # root reads any mode: a tar that fails on its own stands in
        pod_take = ["sh", "-c", "echo 'tar: ./gone: Cannot open: Permission denied' >&2; exit 2"]
        transport_take = PodExecTransport(lambda p, c, argv: pod.open_exec(p, c, pod_take))
    else:
        transport_take = transport
    with pytest.raises(WorkspaceError, match=r"tar exited 2\): tar: ./gone: Cannot open"):
        await transport_take.take(POD, ws)
    assert [p.name for p in ws.upper.iterdir() if p.name != "a.txt"] == []


async def test_a_hostile_archive_from_the_pod_is_refused_by_the_shared_unpacker(tmp_path: Path) -> None:
    _transport, pod, ws = await put_and_edit(tmp_path, {"a.txt": "a\n"})
    evil = tmp_path / "evil.tar"
    with tarfile.open(evil, "w") as tar:
        info = tarfile.TarInfo("./../escape")
        tar.addfile(info)
    pod_take = ["cat", str(evil)]
    hostile = PodExecTransport(lambda p, c, argv: pod.open_exec(p, c, pod_take))
    with pytest.raises(WorkspaceError, match="'./../escape'"):
        await hostile.take(POD, ws)
    assert not (tmp_path / "escape").exists()


async def test_the_exec_request_names_the_pod_container_command_and_streams(kmock: kmock.KubernetesEmulator) -> None:
    runtime = runtime_for(kmock)
    open_exec = kubernetes_exec(lambda: runtime.api_client, NS)
    with pytest.raises(RuntimeUnavailableError, match=f"cannot exec in pod {POD} \\(workspace-in\\)") as caught:
        await asyncio.to_thread(open_exec, POD, WORKSPACE_IN_CONTAINER_NAME, PUT_COMMAND)  # the mock shares this loop
    assert "pods/exec" in (caught.value.hint or "")
    [request] = [r for r in kmock if r.url.path == f"{PODS}/{POD}/exec"]
    query = parse_qs(request.url.query_string)
    assert query["command"] == PUT_COMMAND
    assert query["container"] == [WORKSPACE_IN_CONTAINER_NAME]
    assert (query["stdin"], query["stdout"], query["stderr"], query["tty"]) == (["true"], ["true"], ["true"], ["false"])
    assert request.headers["Upgrade"].lower() == "websocket"
    assert "v5.channel.k8s.io" in request.headers["Sec-WebSocket-Protocol"]
