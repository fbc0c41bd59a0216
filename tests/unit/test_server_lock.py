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


def test_an_unreachable_server_is_one_clear_error_naming_its_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from hydra_sandbox.cli import remote
    from hydra_sandbox.errors import HydraError
    from hydra_sandbox.server_lock import ServerInfo

    monkeypatch.setenv("HYDRA_DATA_HOME", str(tmp_path / "data"))
    gone = ServerInfo(pid=1, transport="http", url="http://127.0.0.1:9/mcp", token="t")
    monkeypatch.setattr(remote, "running_server", lambda _home: gone)
    with pytest.raises(HydraError, match=r"could not call list_sessions on the Hydra server at http://127\.0\.0\.1:9"):
        remote.server_call("list_sessions", {})
