"""The server image (top-level Dockerfile) over streamable HTTP: non-root, healthy, bearer token
required, foreign Origin refused, and a real MCP client over the network sees the tools."""

from __future__ import annotations

import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import docker
import pytest
from fastmcp import Client
from fastmcp.client.auth import BearerAuth

from hydra_sandbox import __version__
from hydra_sandbox.images import build_server_image
from hydra_sandbox.settings import load_settings

pytestmark = pytest.mark.docker
TOKEN = "test-token-7f3a9c21e4b5"


@pytest.fixture(scope="module")
def server_url(docker_client: docker.DockerClient) -> Iterator[str]:
    tag = f"hydra-server:{__version__}"
    try:
        docker_client.images.get(tag)
    except docker.errors.ImageNotFound:
        build_server_image(load_settings(), tag=tag)
    container = docker_client.containers.run(
        tag,
        detach=True,
        environment={"HYDRA_HTTP_TOKEN": TOKEN},
        ports={"8765/tcp": ("127.0.0.1", None)},
        labels={"hydra.test": "1"},
    )
    try:
        deadline = time.monotonic() + 90
        url = ""
        while time.monotonic() < deadline:
            container.reload()
            ports = container.attrs["NetworkSettings"]["Ports"].get("8765/tcp")
            if ports:
                url = f"http://127.0.0.1:{ports[0]['HostPort']}/mcp"
                try:
                    urllib.request.urlopen(urllib.request.Request(url, method="GET"), timeout=2)
                except urllib.error.HTTPError:
                    break  # the server answers (401/405/406): it is up
                except OSError:
                    pass
            assert container.status in {"created", "running"}, container.logs().decode()[-2000:]
            time.sleep(0.5)
        else:
            pytest.fail("server did not answer: " + container.logs().decode()[-2000:])
        assert container.exec_run("id -u").output.decode().strip() == "10001"
        yield url
    finally:
        container.remove(force=True)


def _status(url: str, headers: dict[str, str]) -> int:
    body = b'{"jsonrpc":"2.0","id":1,"method":"tools/list"}'
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"content-type": "application/json", "accept": "application/json, text/event-stream", **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as exc:
        return exc.code


def test_requests_without_the_bearer_token_are_refused(server_url: str) -> None:
    assert _status(server_url, {}) == 401
    assert _status(server_url, {"authorization": "Bearer wrong-token"}) == 401


def test_a_foreign_origin_is_refused(server_url: str) -> None:
    assert _status(server_url, {"authorization": f"Bearer {TOKEN}", "origin": "http://evil.example"}) in {400, 403}


async def test_a_real_mcp_client_over_http_sees_every_tool(server_url: str) -> None:
    async with Client(server_url, auth=BearerAuth(TOKEN)) as client:
        names = {t.name for t in await client.list_tools()}
        assert {"spawn_agent", "wait_session", "apply_diff", "search_context"} <= names
        profiles = (await client.call_tool("list_agents", {})).structured_content
        assert {p["id"] for p in profiles["profiles"]} >= {"default", "code_reviewer", "data_migration"}
