"""A second, real Docker engine for the remote-engine tests (marked ``docker``): a ``dockerd`` process of
its own on this machine, reached over TCP with mutual TLS on loopback.

Privileged containers cannot start on the machines Hydra is tested on, so "Docker in Docker" is not
possible; a second ``dockerd`` (same binary as the main one) with its own ``--data-root``,
``--exec-root`` (so its own managed containerd), ``--pidfile``, Unix socket, containerd namespaces
coexists with the main engine. Its default network is a bridge of its own (``hre<pid>``, created here on
a /24 no route of this machine uses) with ``--iptables=false --ip6tables=false``, which keeps it away
from the main engine's networking. Never ``--bridge=none``: dockerd then deletes ``docker0``, the main
engine's default bridge, at start. It starts with no images: the session's fixture
copies the agent image into it with Hydra's own copy code (:mod:`hydra_sandbox.image_copy`).

Everything is torn down even when a test fails: dockerd stopped (then killed), its containerd killed,
anything still mounted under its directories unmounted, the directories removed.
"""

from __future__ import annotations

import contextlib
import datetime
import ipaddress
import itertools
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import docker
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pydantic import BaseModel, ConfigDict
from typer.testing import CliRunner

from hydra_sandbox.cli import app
from hydra_sandbox.docker_engines import engine_client
from hydra_sandbox.docker_hosts import EngineConfig, resolve_engines
from hydra_sandbox.gateway_image import build_gateway_image
from hydra_sandbox.image_copy import copy_image
from hydra_sandbox.settings import load_settings

START_DEADLINE_S = 60.0
_BRIDGES = itertools.count()
STOP_DEADLINE_S = 20.0


class RemoteEngine(BaseModel):
    """The second engine: its TLS URL and client files, its own Unix socket, and where it keeps state."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    engine: EngineConfig
    tls_dir: Path
    socket_url: str
    root: Path


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    path.write_bytes(pem)
    path.chmod(0o600)


def _certificate(
    subject: str, key: ec.EllipticCurvePrivateKey, issuer: tuple[x509.Name, ec.EllipticCurvePrivateKey] | None, *,
    usage: x509.ObjectIdentifier | None, loopback: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    issuer_name, signer = issuer if issuer is not None else (_name(subject), key)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(subject))
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=issuer is None, path_length=None), critical=True)
    )
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    if loopback:
        import ipaddress

        names = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(signer, hashes.SHA256())


def make_tls(folder: Path, common: str = "hydra-test-ca") -> tuple[Path, Path, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, as Docker's TLS set-up names
    them. Returns (CA, server cert, server key); the client side is ``ca.pem``, ``cert.pem``, ``key.pem``."""
    folder.mkdir(parents=True, exist_ok=True)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = _certificate(common, ca_key, None, usage=None)
    issuer = (ca.subject, ca_key)
    server_key, client_key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    server = _certificate("localhost", server_key, issuer, usage=ExtendedKeyUsageOID.SERVER_AUTH, loopback=True)
    client = _certificate("hydra-client", client_key, issuer, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
    (folder / "ca.pem").write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    (folder / "server-cert.pem").write_bytes(server.public_bytes(serialization.Encoding.PEM))
    _write_key(server_key, folder / "server-key.pem")
    (folder / "cert.pem").write_bytes(client.public_bytes(serialization.Encoding.PEM))
    _write_key(client_key, folder / "key.pem")
    return folder / "ca.pem", folder / "server-cert.pem", folder / "server-key.pem"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _unused_subnet() -> str:
    """A /24 of 10.213.0.0/16 that no route of this machine covers, for the second engine's bridge."""
    routes = subprocess.run(["ip", "-4", "route"], capture_output=True, text=True, check=True).stdout
    taken = [ipaddress.ip_network(word, strict=False) for word in routes.split() if "/" in word]
    for third in range(256):
        candidate = ipaddress.ip_network(f"10.213.{third}.0/24")
        if not any(candidate.overlaps(net) for net in taken):
            return f"10.213.{third}.1/24"
    raise RuntimeError("no free /24 in 10.213.0.0/16 for the second engine's bridge")


@contextlib.contextmanager
def _own_bridge() -> Iterator[str]:
    """A bridge interface for the second engine alone, removed afterwards (a suffix for each further
    engine this process starts)."""
    count = next(_BRIDGES)
    name = f"hre{os.getpid() % 100000}" + (f"x{count}" if count else "")
    subprocess.run(["ip", "link", "add", name, "type", "bridge"], capture_output=True, check=True)
    try:
        subprocess.run(["ip", "addr", "add", _unused_subnet(), "dev", name], capture_output=True, check=True)
        subprocess.run(["ip", "link", "set", name, "up"], capture_output=True, check=True)
        yield name
    finally:
        subprocess.run(["ip", "link", "del", name], capture_output=True, check=False)


def _dockerd_argv(root: Path, port: int, tls: tuple[Path, Path, Path], bridge: str) -> list[str]:
    ca, cert, key = tls
    # containerd namespaces are [A-Za-z0-9]+ joined by single . _ or -: mkdtemp's suffix may hold "_" next to "-"
    name = "hre" + "".join(ch for ch in root.name.removeprefix("hre-") if ch.isalnum())
    return [
        "dockerd",
        f"--data-root={root / 'data'}",
        f"--exec-root={root / 'exec'}",
        f"--pidfile={root / 'dockerd.pid'}",
        f"--host=unix://{root / 'docker.sock'}",
        f"--host=tcp://127.0.0.1:{port}",
        "--tlsverify",
        f"--tlscacert={ca}",
        f"--tlscert={cert}",
        f"--tlskey={key}",
        f"--bridge={bridge}",  # never none: dockerd deletes docker0 then
        "--iptables=false",
        "--ip6tables=false",
        f"--containerd-namespace={name}",
        f"--containerd-plugins-namespace={name}-plugins",
    ]


def _wait_until_up(process: subprocess.Popen[bytes], socket_url: str, log: Path) -> None:
    deadline = time.monotonic() + START_DEADLINE_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the second dockerd exited with {process.returncode}:\n{log.read_text()[-3000:]}")
        with contextlib.suppress(Exception):
            docker.DockerClient(base_url=socket_url, timeout=5).ping()
            return
        time.sleep(0.2)
    raise RuntimeError(f"the second dockerd did not answer in {START_DEADLINE_S:.0f} s:\n{log.read_text()[-3000:]}")


def _kill_pidfile(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError, ValueError, ProcessLookupError):
        os.kill(int(path.read_text().strip()), signal.SIGKILL)


def _unmount_below(root: Path) -> None:
    """Unmount whatever is still mounted under ``root``, deepest first (overlay layers, shm, netns)."""
    mounts = [line.split()[4] for line in Path("/proc/self/mountinfo").read_text().splitlines()]
    below = [m.encode().decode("unicode_escape") for m in mounts if m.startswith(str(root) + "/")]
    for mount in sorted(below, key=len, reverse=True):
        subprocess.run(["umount", "-l", mount], capture_output=True, check=False)


def _stop(process: subprocess.Popen[bytes], root: Path) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=STOP_DEADLINE_S)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=STOP_DEADLINE_S)
    _kill_pidfile(root / "exec" / "containerd" / "containerd.pid")  # left behind only when dockerd was killed
    _unmount_below(root)
    shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def second_engine() -> Iterator[RemoteEngine]:
    """Start the second engine; stop it and remove everything it made when the block ends."""
    root = Path(tempfile.mkdtemp(prefix="hre-", dir="/tmp"))  # short: its Unix socket path is limited
    port = _free_port()
    tls = make_tls(root / "tls")
    log = root / "dockerd.log"
    bridges = contextlib.ExitStack()
    bridge = bridges.enter_context(_own_bridge())
    with log.open("wb") as out:
        process = subprocess.Popen(_dockerd_argv(root, port, tls, bridge), stdout=out, stderr=subprocess.STDOUT)
    try:
        socket_url = f"unix://{root / 'docker.sock'}"
        _wait_until_up(process, socket_url, log)
        engine = resolve_engines(f"tcp://127.0.0.1:{port}", root / "tls")[0]
        yield RemoteEngine(engine=engine, tls_dir=root / "tls", socket_url=socket_url, root=root)
    finally:
        _stop(process, root)
        bridges.close()


@pytest.fixture(scope="session")
def remote_engine() -> Iterator[RemoteEngine]:
    """The second engine, one per test session; skipped, with the reason, where it cannot run."""
    if shutil.which("dockerd") is None:
        pytest.skip("remote-engine tests need the dockerd binary on PATH to start a second engine")
    if os.geteuid() != 0:
        pytest.skip("remote-engine tests start a second dockerd, which needs root")
    with second_engine() as engine:
        yield engine


@pytest.fixture(scope="session")
def remote_agent_image(remote_engine: RemoteEngine, agent_image: str) -> str:
    """The real agent image, copied from the main engine into the second one by Hydra's copy code."""
    copy_image(docker.from_env(), engine_client(remote_engine.engine), [agent_image])
    return agent_image


@pytest.fixture(scope="session")
def remote_gateway_image(remote_engine: RemoteEngine, docker_client: docker.DockerClient) -> str:
    """The gateway image (built here when missing or changed), copied into the second engine like the agent's."""
    tag = build_gateway_image(load_settings()).tag
    copy_image(docker_client, engine_client(remote_engine.engine), [tag])
    return tag


def _hydra_objects(client: docker.DockerClient) -> set[str]:
    found = {f"container {c.name}" for c in client.containers.list(all=True, filters={"label": "hydra.session"})}
    found |= {f"volume {v.name}" for v in client.volumes.list(filters={"label": "hydra.session"})}
    return found | {f"network {n.name}" for n in client.networks.list(filters={"label": "hydra.session"})}


@pytest.fixture(autouse=True)
def nothing_left_on_the_remote_engine(request: pytest.FixtureRequest) -> Iterator[None]:
    """Like ``nothing_left_behind``, on the second engine, for the tests that use it."""
    if "remote_engine" not in request.fixturenames:
        yield
        return
    client = engine_client(request.getfixturevalue("remote_engine").engine)
    before = _hydra_objects(client)
    yield
    leftover = _hydra_objects(client) - before
    assert not leftover, f"left behind on the second engine: {sorted(leftover)}"


def cli_copies_and_doctor_passes(url: str, over: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """`hydra images copy --to URL` finds both images there already, and `hydra doctor` with
    ``HYDRA_DOCKER_HOST=URL`` reaches the engine ``over`` its transport and finds both images."""
    copied = CliRunner().invoke(app, ["images", "copy", "--to", url, "--json"])
    assert copied.exit_code == 0, copied.output
    assert [(c["engine"], c["skipped"]) for c in json.loads(copied.output)] == [(url, True), (url, True)]
    monkeypatch.setenv("HYDRA_DOCKER_HOST", url)
    doctor = CliRunner().invoke(app, ["doctor", "--json"])
    checks = {c["name"]: c for c in json.loads(doctor.output)}
    assert checks[f"docker {url}"]["ok"] and over in checks[f"docker {url}"]["detail"]
    assert checks[f"agent image {url}"]["ok"], checks[f"agent image {url}"]
    assert checks[f"gateway image {url}"]["ok"], checks[f"gateway image {url}"]
