from pathlib import Path

import pytest

from hydra_sandbox.server_lock import ServerLock, running_server


@pytest.mark.parametrize(
    ("host", "url"),
    [
        ("127.0.0.1", "http://127.0.0.1:8765/mcp"),
        ("0.0.0.0", "http://127.0.0.1:8765/mcp"),
        ("::", "http://[::1]:8765/mcp"),
        ("10.1.2.3", "http://10.1.2.3:8765/mcp"),
    ],
)
def test_cli_is_told_an_address_the_servers_host_check_accepts(tmp_path: Path, host: str, url: str) -> None:
    """A server bound to every interface (the server image, the Helm chart) is called on loopback:
    its Host/Origin guard answers ``Host: 0.0.0.0`` with 421 Misdirected Request."""
    with ServerLock(tmp_path, "http", host, 8765, "token"):
        info = running_server(tmp_path)
        assert info is not None
        assert info.url == url
    assert running_server(tmp_path) is None
