"""The workspace of a Kubernetes pod, in and out as tar archives over ``pods/exec``.

The pod of a spec with a workspace (:func:`~.manifests.pod_manifest`) has the workspace volume (an
emptyDir) seen by three containers of the agent's image, all as locked down as the agent and run as its
uid:gid: the init container ``workspace-in`` (the volume at ``/xfer``, read-write) waits for the archive;
the agent (only the volume's ``ws`` directory, as ``/workspace``, through ``subPath``); and
``workspace-out`` (``/xfer`` read-only), which keeps the tree readable once the agent exited.

:meth:`PodExecTransport.put` packs the session's view (:func:`~hydra_sandbox.sandbox.archive.pack_workspace`:
hidden and denied paths never leave Hydra's machine), streams it as stdin frames into ``tar -x`` in
``workspace-in`` and, once tar succeeded, writes the marker that lets the init container exit: the agent
never starts on a partial tree. The archive's top member ``ws`` is created by that unprivileged tar, so the
workspace is owned by the agent with the mode the archive gives (the role of the Docker backend's nested
mount). Tar keeps modes (``-p``) but cannot keep another user's ownership, so an entry that is not the
agent's is refused before anything is sent (under the overlay it would stay another user's).

:meth:`PodExecTransport.take` runs ``tar -c`` in ``workspace-out`` and reads its stdout frame by frame
into a file on Hydra's disk, cut off past the session's byte bound and its deadline, then hands it to
:func:`~hydra_sandbox.sandbox.archive_changes.unpack_changes`, which treats it as hostile (members, names,
sizes) and writes the overlay form of the change set into ``ws.upper``: diff, preview and apply read it
unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Callable
from typing import Any

from websocket import WebSocketException

from hydra_sandbox.errors import RuntimeUnavailableError, WorkspaceError
from hydra_sandbox.sandbox.archive import Manifest, load_manifest, manifest_path, pack_workspace, save_manifest
from hydra_sandbox.sandbox.archive_changes import UnpackBounds, UnpackResult, bounds_for, stream_limit, unpack_changes
from hydra_sandbox.sandbox.backends.kubernetes.exec_channels import FRAME_BYTES, ExecChannels, ExecSocket
from hydra_sandbox.sandbox.backends.kubernetes.manifests import (
    READY_MARKER,
    TRANSFER_MOUNT,
    WORKSPACE_IN_CONTAINER_NAME,
    WORKSPACE_OUT_CONTAINER_NAME,
    WORKSPACE_SUBPATH,
)
from hydra_sandbox.sandbox.spec import Mount
from hydra_sandbox.sandbox.workspace import WORKSPACE_IN_CONTAINER, StagedWorkspace

TRANSFER_TIMEOUT_S = 600.0
"""Longest a put or a take may take, end to end."""
SOCKET_TIMEOUT_S = 60.0
"""Longest a single websocket read or write may block."""

PUT_COMMAND = [
    "sh",
    "-c",
    f"tar -x -p --no-same-owner -f - -C {TRANSFER_MOUNT} && : > {TRANSFER_MOUNT}/{READY_MARKER}",
]
"""Extract stdin below the volume's root (modes kept: an unprivileged tar applies the umask otherwise),
then release the init container. Tar stops at the archive's end blocks, so it also ends on ``v4``."""
TAKE_COMMAND = ["tar", "-c", "-f", "-", "-C", f"{TRANSFER_MOUNT}/{WORKSPACE_SUBPATH}", "."]
"""The agent's tree as members ``./`` and ``./path``; links stored, never followed."""

ExecOpener = Callable[[str, str, list[str]], ExecChannels]
"""Opens an exec of ``argv`` in container ``container`` of pod ``pod`` (stdin, stdout, stderr, no tty)."""


def kubernetes_exec(api_client: Callable[[], Any], namespace: str) -> ExecOpener:
    """Execs through the official client's websocket (``kubernetes.stream``), channels ``v5`` or ``v4``."""

    def open_exec(pod: str, container: str, argv: list[str]) -> ExecChannels:
        from kubernetes import client as k8s
        from kubernetes.client.exceptions import ApiException
        from kubernetes.stream import stream

        core = k8s.CoreV1Api(api_client())
        try:
            ws_client = stream(
                core.connect_get_namespaced_pod_exec,
                pod,
                namespace,
                command=argv,
                container=container,
                stdin=True,
                stdout=True,
                stderr=True,
                tty=False,
                binary=True,
                _preload_content=False,
            )
        except ApiException as exc:  # the client reports a refused upgrade as status 0 with the reason
            raise RuntimeUnavailableError(
                f"cannot exec in pod {pod} ({container}) in namespace {namespace}: {exc.reason}",
                hint="the server's account needs pods/exec in that namespace (docs/kubernetes.md), "
                "and the pod's container must be running",
            ) from None
        sock: ExecSocket = ws_client.sock
        ws_client.sock.settimeout(SOCKET_TIMEOUT_S)
        return ExecChannels(sock, ws_client.subprotocol, f"exec in pod {pod} ({container})")

    return open_exec


class _FrameWriter:
    """The file object :func:`pack_workspace` writes to: stdin frames of up to :data:`FRAME_BYTES`,
    sent as they fill, and never past the deadline."""

    def __init__(self, channels: ExecChannels, deadline: float) -> None:
        self.channels, self.deadline = channels, deadline
        self.buffer = bytearray()
        self.sent = 0

    def write(self, data: bytes) -> int:
        self.buffer += data
        if len(self.buffer) >= FRAME_BYTES:
            self.flush()
        return len(data)

    def flush(self) -> None:
        if time.monotonic() > self.deadline:
            raise WorkspaceError(f"{self.channels.what}: sending the workspace took over its time limit")
        if self.buffer:
            self.channels.write_stdin(bytes(self.buffer))
            self.sent += len(self.buffer)
            self.buffer.clear()


def _agents_own(ws: StagedWorkspace) -> Callable[[str, os.stat_result], None]:
    """Refuses an entry another user owns: the pod's unprivileged tar would make it the agent's."""

    def check(rel: str, st: os.stat_result) -> None:
        if st.st_uid != ws.agent_uid:
            raise WorkspaceError(
                f"session {ws.session_id}: {rel or '.'} is owned by uid {st.st_uid}, not the agent's {ws.agent_uid}; "
                "in a pod it would become the agent's (tar there runs unprivileged)",
                hint="give the agent's user those files, or deny the path in the policy's filesystem rules",
            )

    return check


class PodExecTransport:
    """The workspace of a pod over ``pods/exec``: :meth:`put` before the agent starts, :meth:`take`
    after it exited (while ``workspace-out`` still runs), then :meth:`discard` what is left on Hydra's side.

    As the orchestrator's :class:`~hydra_sandbox.sandbox.workspace.WorkspaceTransport` it is also a
    :class:`~hydra_sandbox.sandbox.workspace.ContainerWorkspace`: :meth:`attach` only names the volume
    (the pod's emptyDir does not exist yet), :meth:`after_create` puts, :meth:`before_remove` takes."""

    def __init__(self, open_exec: ExecOpener, *, timeout_s: float = TRANSFER_TIMEOUT_S) -> None:
        self._open = open_exec
        self.timeout_s = timeout_s

    async def attach(self, ws: StagedWorkspace) -> Mount:
        """The workspace mount of the agent's spec: an emptyDir of its pod, filled by :meth:`after_create`."""
        return Mount(type="volume", source=ws.volume_name, target=WORKSPACE_IN_CONTAINER)

    async def after_create(self, ws: StagedWorkspace, container_id: str) -> None:
        await self.put(container_id, ws)

    async def before_remove(self, ws: StagedWorkspace, container_id: str) -> None:
        await self.take(container_id, ws)

    async def release(self, ws: StagedWorkspace) -> None:
        """The pod is gone and its volume with it; the change set came home in :meth:`before_remove`
        (a run that failed before that leaves its baseline, spent, to remove)."""
        await self.discard(ws)

    async def put(self, pod: str, ws: StagedWorkspace) -> Manifest:
        """Send the session's view into ``pod`` and keep its manifest as the run's baseline."""
        manifest = await asyncio.to_thread(self._put, pod, ws)
        await asyncio.to_thread(save_manifest, ws, manifest)
        return manifest

    def _put(self, pod: str, ws: StagedWorkspace) -> Manifest:
        deadline = time.monotonic() + self.timeout_s
        channels = self._open(pod, WORKSPACE_IN_CONTAINER_NAME, PUT_COMMAND)
        try:
            writer = _FrameWriter(channels, deadline)
            try:
                manifest = pack_workspace(ws, writer, check=_agents_own(ws))  # type: ignore[arg-type]
                writer.flush()
            except (OSError, WebSocketException) as exc:  # the pod's side closed: its status says why
                code = _code_or_none(channels)
                raise WorkspaceError(
                    f"{channels.what}: the pod stopped taking the workspace ({exc}); tar exited {code}: "
                    f"{_said(channels)}",
                    hint="is the workspace volume full (the policy's disk_mb)? did the pod fail?",
                ) from None
            channels.close_stdin()
            code = channels.finish()
        finally:
            with contextlib.suppress(Exception):
                channels.sock.close()
        if code != 0:
            raise WorkspaceError(
                f"{channels.what}: extracting the workspace failed (tar exited {code}): {_said(channels)}",
                hint="is the workspace volume full (the policy's disk_mb)? the agent does not start",
            )
        return manifest

    async def take(self, pod: str, ws: StagedWorkspace, bounds: UnpackBounds | None = None) -> UnpackResult:
        """Read the agent's tree out of ``pod`` and write its change set into ``ws.upper``, within
        ``bounds`` (default: the session's, :func:`~hydra_sandbox.sandbox.archive_changes.bounds_for`)."""
        manifest = await asyncio.to_thread(load_manifest, ws)
        bounds = bounds or bounds_for(ws, manifest)
        archive = ws.session_dir / "transfer-out.tar"
        try:
            with archive.open("w+b") as fh:
                await asyncio.to_thread(self._take, pod, ws, stream_limit(bounds), fh)
                fh.seek(0)
                result = await asyncio.to_thread(unpack_changes, fh, manifest, ws, bounds)
        finally:
            archive.unlink(missing_ok=True)
        manifest_path(ws).unlink(missing_ok=True)  # the baseline is spent: the next run packs a new one
        return result

    def _take(self, pod: str, ws: StagedWorkspace, limit: int, out: Any) -> None:
        deadline = time.monotonic() + self.timeout_s
        channels = self._open(pod, WORKSPACE_OUT_CONTAINER_NAME, TAKE_COMMAND)
        received = 0
        try:
            channels.close_stdin()
            for chunk in channels.stdout():
                received += len(chunk)
                if received > limit:
                    raise WorkspaceError(
                        f"session {ws.session_id}: the agent's archive from pod {pod} is over {limit} bytes; "
                        "nothing of it was applied to the layer",
                        hint="fewer or smaller files (the bound is the baseline plus the disk quota)",
                    )
                if time.monotonic() > deadline:
                    raise WorkspaceError(
                        f"session {ws.session_id}: reading the workspace out of pod {pod} took over "
                        f"{self.timeout_s:.0f} s; nothing of it was applied to the layer"
                    )
                out.write(chunk)
            code = channels.finish()
        finally:
            with contextlib.suppress(Exception):
                channels.sock.close()
        if code != 0:
            raise WorkspaceError(
                f"session {ws.session_id}: reading the workspace out of pod {pod} failed (tar exited {code}): "
                f"{_said(channels)}; nothing of it was applied to the layer",
                hint="a file the agent made unreadable cannot be read back",
            )

    async def discard(self, ws: StagedWorkspace) -> None:
        """The pod's volume goes with the pod; only the baseline on Hydra's disk is left to remove."""
        with contextlib.suppress(FileNotFoundError):
            manifest_path(ws).unlink()


def _code_or_none(channels: ExecChannels) -> int | None:
    with contextlib.suppress(Exception):
        return channels.finish()
    return None


def _said(channels: ExecChannels) -> str:
    return channels.stderr.decode("utf-8", "replace").strip()[-500:] or "(nothing on stderr)"
