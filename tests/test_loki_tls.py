"""Loki over HTTPS: a private CA, a client certificate, and skip-verify, through the real path."""

from __future__ import annotations

import ssl
import subprocess
import time
from pathlib import Path

import pytest
from dockerengine import DockerEngine
from harness import CollectorProcess
from loki_receiver import LokiReceiver
from polling import wait_until

pytestmark = pytest.mark.docker


def _openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True, timeout=60)


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, made with openssl."""
    d = tmp_path_factory.mktemp("pki")
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=test-ca",
             "-keyout", str(d / "ca.key"), "-out", str(d / "ca.pem"))
    (d / "san.ext").write_text("subjectAltName=IP:127.0.0.1\n")
    for who, extra in (("server", ["-extfile", str(d / "san.ext")]), ("client", [])):
        _openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN={who}", "-keyout", str(d / f"{who}.key"), "-out", str(d / f"{who}.csr"))
        _openssl("x509", "-req", "-in", str(d / f"{who}.csr"), "-CA", str(d / "ca.pem"), "-CAkey", str(d / "ca.key"),
                 "-CAcreateserial", "-days", "2", "-out", str(d / f"{who}.pem"), *extra)
    return d


def server_context(pki: Path, require_client_cert: bool) -> ssl.SSLContext:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(pki / "server.pem", pki / "server.key")
    if require_client_cert:
        context.load_verify_locations(pki / "ca.pem")
        context.verify_mode = ssl.CERT_REQUIRED
    return context


async def deliver(engine: DockerEngine, receiver: LokiReceiver, **env: str) -> CollectorProcess:
    proc = await CollectorProcess(engine, env={"COLLECTOR_LOKI__URL": receiver.push_url, **env}).start()
    return proc


async def test_private_ca_and_client_certificate(pki: Path, containers: DockerEngine) -> None:
    receiver = LokiReceiver()
    await receiver.start(ssl_context=server_context(pki, require_client_cert=True))
    try:
        assert receiver.push_url.startswith("https://")
        proc = await deliver(containers, receiver, COLLECTOR_LOKI__TLS__CA_FILE=str(pki / "ca.pem"),
                             COLLECTOR_LOKI__TLS__CERT_FILE=str(pki / "client.pem"), COLLECTOR_LOKI__TLS__KEY_FILE=str(pki / "client.key"))
        try:
            name = f"tls-{time.monotonic_ns()}"
            containers.run("echo over tls", name=name)
            await receiver.wait_for(lambda: receiver.lines({"container_name": name}) == ["over tls"])
        finally:
            assert await proc.stop() == 0
    finally:
        await receiver.stop()


async def test_unknown_ca_is_retried_not_sent_and_skip_verify_sends(pki: Path, containers: DockerEngine) -> None:
    receiver = LokiReceiver()
    await receiver.start(ssl_context=server_context(pki, require_client_cert=False))
    try:
        name = f"tlsv-{time.monotonic_ns()}"
        proc = await deliver(containers, receiver, COLLECTOR_LOKI__MIN_BACKOFF="100ms", COLLECTOR_LOKI__MAX_BACKOFF="200ms",
                             COLLECTOR_SHUTDOWN__FLUSH_TIMEOUT="1s")
        try:
            containers.run("echo verified", name=name)
            # The system CAs do not know our CA: the push fails verification and is retried.
            await wait_until(lambda: sum("push failed; retrying" in line and "TLS certificate verify failed (unable to get local issuer certificate)" in line for line in proc.stderr) >= 2,
                             30, what="certificate verification failures")
            assert receiver.lines({"container_name": name}) == []
        finally:
            assert await proc.stop() == 0  # flush deadline ends the hopeless retries; the line stays in the file
        proc = await deliver(containers, receiver, COLLECTOR_LOKI__TLS__INSECURE_SKIP_VERIFY="true",
                             COLLECTOR_POSITIONS__PATH=proc.positions_path)
        try:
            await receiver.wait_for(lambda: receiver.lines({"container_name": name}) == ["verified"])
        finally:
            assert await proc.stop() == 0
    finally:
        await receiver.stop()
