"""Which Codex an agent image really holds: a fact read from the image, never the configured setting.

``hydra images build`` writes the version it staged into the image's :data:`LABEL_CODEX_VERSION`
label. An image without that label (built by hand, or by an older Hydra) is asked instead: ``codex
--version`` runs once in a throwaway container with every default hardening of
:class:`~hydra_sandbox.sandbox.spec.ContainerSpec` (no network, read-only root, no capabilities).
Either answer is cached by image id, so a rebuilt tag is looked at again and an unchanged one never is.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from typing import Literal

from pydantic import BaseModel

from hydra_sandbox.errors import RuntimeUnavailableError
from hydra_sandbox.sandbox.runtime import ContainerRuntime
from hydra_sandbox.sandbox.spec import LABEL_HOME, LABEL_ROLE, ContainerSpec

LABEL_CODEX_VERSION = "hydra.codex-version"
PROBE_USER = "1000:1000"
PROBE_TIMEOUT_S = 60.0
_VERSION = re.compile(r"^codex(?:-cli)?\s+v?(\d+\.\d+\.\d+[0-9A-Za-z.+-]*)\s*$", re.MULTILINE)


class CodexVersion(BaseModel):
    """The Codex version found in ``image`` (id ``image_id``), and how it was found."""

    image: str
    image_id: str
    version: str
    source: Literal["label", "probe"]


def parse_codex_version(output: str) -> str | None:
    """``codex-cli 0.169.0`` (what ``codex --version`` prints) -> ``0.169.0``; ``None`` for anything else."""
    match = _VERSION.search(output)
    return match.group(1) if match else None


class CodexVersionFinder:
    """Finds the Codex version of an image through a :class:`ContainerRuntime`, once per image id."""

    def __init__(self, runtime: ContainerRuntime, *, home_label: str, timeout_s: float = PROBE_TIMEOUT_S) -> None:
        self._runtime = runtime
        self._home = home_label
        self._timeout_s = timeout_s
        self._found: dict[str, CodexVersion] = {}

    async def find(self, image: str) -> CodexVersion | None:
        """The Codex version in ``image``; ``None`` when the image does not exist. Raises
        :class:`RuntimeUnavailableError` when the engine is down or the probe cannot tell."""
        info = await self._runtime.image_info(image)
        if info is None:
            return None
        cached = self._found.get(info.id)
        if cached is not None:
            return cached.model_copy(update={"image": image})
        label = info.labels.get(LABEL_CODEX_VERSION, "").strip()
        if label:
            found = CodexVersion(image=image, image_id=info.id, version=label, source="label")
        else:
            found = CodexVersion(image=image, image_id=info.id, version=await self._probe(image), source="probe")
        self._found[info.id] = found
        return found

    async def _probe(self, image: str) -> str:
        spec = ContainerSpec(
            image=image,
            argv=["codex", "--version"],
            user=PROBE_USER,
            labels={LABEL_ROLE: "probe", LABEL_HOME: self._home},
        )
        container_id = await self._runtime.create(spec)
        try:
            await self._runtime.start(container_id)
            output = await asyncio.wait_for(self._stdout(container_id), self._timeout_s)
            exit_code = await self._runtime.wait(container_id, self._timeout_s)
        except TimeoutError:
            raise RuntimeUnavailableError(
                f"agent image {image}: `codex --version` did not finish within {self._timeout_s:.0f} s",
                hint="check the image with `hydra doctor`, or rebuild it with `hydra images build --force`",
            ) from None
        finally:
            with contextlib.suppress(RuntimeUnavailableError):
                await self._runtime.remove(container_id)
        version = parse_codex_version(output)
        if exit_code != 0 or version is None:
            raise RuntimeUnavailableError(
                f"agent image {image}: `codex --version` exited {exit_code} and printed {output.strip()[:200]!r}, "
                "not a Codex version",
                hint="rebuild the image with `hydra images build --force` (its build labels the Codex version)",
            )
        return version

    async def _stdout(self, container_id: str) -> str:
        chunks = [data async for stream, data in self._runtime.stream_logs(container_id) if stream == "stdout"]
        return b"".join(chunks).decode(errors="replace")
