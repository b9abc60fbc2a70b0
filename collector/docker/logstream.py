"""`GET /containers/{id}/logs` on a connection pool of its own.

Requested directly rather than through aiodocker's `log()`, which drops the stream byte and ends
quietly on connection errors. Long-lived streams get their own connector (no connection limit), so
200 streaming containers never make events or inspects wait for a connection.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import aiohttp

from collector.docker.heldconnections import HeldConnections
from collector.docker.logbody import LogBody


class LogsUnavailable(Exception):
    """Docker answered but will not give these logs: `status` says why (404 gone, 501 not readable)."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(f"HTTP {status}: {message}")
        self.status = status
        self.message = message


def _endpoint(host: str) -> tuple[aiohttp.BaseConnector, str]:
    """A connector without a connection limit and the base URL for DOCKER_HOST-style `host`."""
    host = host or os.environ.get("DOCKER_HOST", "") or "unix:///var/run/docker.sock"
    if host.startswith("unix://"):
        return aiohttp.UnixConnector(host[len("unix://"):], limit=0), "http://docker"
    if host.startswith(("tcp://", "http://", "https://")):
        rest = host.split("://", 1)[1].rstrip("/")
        tls = host.startswith("https://") or os.environ.get("DOCKER_TLS_VERIFY", "") == "1"
        context: ssl.SSLContext | bool = True
        if tls:
            cert_dir = os.environ.get("DOCKER_CERT_PATH", "")
            context = ssl.create_default_context(cafile=os.path.join(cert_dir, "ca.pem") if cert_dir else None)
            if cert_dir:
                context.load_cert_chain(os.path.join(cert_dir, "cert.pem"), os.path.join(cert_dir, "key.pem"))
        return aiohttp.TCPConnector(limit=0, ssl=context), f"{'https' if tls else 'http'}://{rest}"
    raise ValueError(f"unsupported docker host for log streams: {host!r}")


class LogStreamClient:
    def __init__(self, host: str = "", connect_timeout: float = 10.0) -> None:
        self._host = host
        self._connect_timeout = connect_timeout
        self._session: aiohttp.ClientSession | None = None
        self._base = ""
        self._held = HeldConnections()

    def _ensure(self) -> aiohttp.ClientSession:
        if self._session is None:
            connector, self._base = _endpoint(self._host)
            # No total or read timeout here: the reader applies its own idle timeout per read.
            # HTTP/1.0: dockerd flushes every log record, and over HTTP/1.1 each flush is a chunk of
            # its own, which aiohttp handles in Python one by one (about 1 CPU-s per million lines);
            # answering 1.0, dockerd sends the bare stream and closes the connection at its end.
            self._session = aiohttp.ClientSession(
                connector=connector,
                timeout=aiohttp.ClientTimeout(total=None, sock_read=None, sock_connect=self._connect_timeout),
                auto_decompress=False,
                version=aiohttp.HttpVersion10,
            )
        return self._session

    @property
    def open_connections(self) -> int:
        """Connections held by our responses (none idles: HTTP/1.0 ends each with its response): a leak shows here."""
        return self._held.count

    async def connect(self, container_id: str, since: str, follow: bool = True) -> aiohttp.ClientResponse:
        """Send the request; the caller owns the response and must close it."""
        session = self._ensure()
        params = {
            "follow": "1" if follow else "0", "stdout": "1", "stderr": "1", "timestamps": "1", "since": since,
        }
        response = self._held.track(await session.get(f"{self._base}/containers/{container_id}/logs", params=params))
        if response.status != 200:
            try:
                body = await response.text(errors="replace")
            finally:
                response.close()
            raise LogsUnavailable(response.status, _message(body))
        return response

    @asynccontextmanager
    async def open(
        self, container_id: str, since: str, follow: bool = True, opened: aiohttp.ClientResponse | None = None,
    ) -> AsyncIterator[LogBody]:
        """The body of the container's log stream from `since` on (or of a response `connect` made
        earlier); its socket is closed the moment the caller leaves."""
        response = opened or await self.connect(container_id, since, follow)
        try:
            yield LogBody(response)
        finally:
            response.close()

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None


def _message(body: str) -> str:
    import json

    try:
        return str(json.loads(body).get("message", body))[:300]
    except (ValueError, AttributeError):
        return body[:300]
