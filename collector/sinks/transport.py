"""The two things the Loki sender needs from the outside world, behind small interfaces (as
httpcore puts its network backend), so tests drive retries, 401/413/429 and shutdown with a
scripted transport and a fake clock: no sockets, no sleeps.
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import errno
import ssl
import time
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import unquote, urlsplit, urlunsplit

import aiohttp

from collector import __version__
from collector.config import LokiConfig
from collector.secrets import Redactor, masked_url, secret_values
from collector.sinks.answer import sentence


@dataclass(frozen=True, slots=True)
class Reply:
    status: int
    body: str
    retry_after: str | None = None  # the raw Retry-After header


class Unreachable(Exception):
    """No answer: connection refused or reset, timeout, TLS failure. The text is short and plain."""


class Transport(Protocol):
    async def post(self, body: bytes, headers: dict[str, str]) -> Reply:
        """One push; raises Unreachable when there is no HTTP answer."""
        ...

    async def close(self) -> None: ...


class Clock(Protocol):
    def monotonic(self) -> float: ...
    def wall(self) -> float: ...
    async def sleep(self, seconds: float) -> None: ...
    async def wait_event(self, event: asyncio.Event, timeout: float) -> None:
        """Until `event` is set or `timeout` seconds passed."""
        ...


class RealClock:
    def monotonic(self) -> float:
        return time.monotonic()

    def wall(self) -> float:
        return time.time()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def wait_event(self, event: asyncio.Event, timeout: float) -> None:
        try:
            async with asyncio.timeout(timeout):
                await event.wait()
        except TimeoutError:
            pass


def retry_after_seconds(value: str | None, now_wall: float) -> float | None:
    """Retry-After in seconds or as an HTTP date; None when absent or unreadable."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - now_wall)


def describe_error(err: BaseException, url: str, timeout: float) -> str:
    """A connection failure as short text for logs and /ready, never a Python repr. The URL is
    shown without its password (the caller also redacts the text: an exception may quote it)."""
    url = masked_url(url)
    if isinstance(err, aiohttp.ClientConnectorError):
        where = f"{err.host}:{err.port}"
        os_error = err.os_error
        if getattr(os_error, "errno", None) == errno.ECONNREFUSED:
            return f"connection refused: {where}"
        if isinstance(err, aiohttp.ClientConnectorCertificateError):
            why = getattr(err.certificate_error, "verify_message", "") or getattr(err.certificate_error, "reason", "")
            return f"TLS certificate verify failed ({why}): {where}" if why else f"TLS certificate verify failed: {where}"
        if isinstance(err, aiohttp.ClientSSLError):
            return f"TLS handshake failed: {where}"
        reason = getattr(os_error, "strerror", None) or str(os_error) or type(os_error).__name__
        return f"cannot connect to {where}: {sentence(reason, 120)}"
    if isinstance(err, (TimeoutError, asyncio.TimeoutError, aiohttp.ServerTimeoutError)):
        return f"no answer within {timeout:g}s: {url}"
    if isinstance(err, aiohttp.ServerDisconnectedError):
        return f"connection closed by the server: {url}"
    if isinstance(err, aiohttp.ClientPayloadError):
        return f"answer cut off: {url}"
    if isinstance(err, ConnectionResetError):
        return f"connection reset: {url}"
    text = str(err) or type(err).__name__
    return sentence(text, 160)


def basic_credentials(username: str, password: str) -> str:
    """The Authorization value of Basic credentials, in RFC 7617's UTF-8. aiohttp's BasicAuth is
    deprecated (gone in 4.0) and encodes Latin-1: a password holding "€" could not be sent."""
    return "Basic " + base64.b64encode(f"{username}:{password}".encode()).decode("ascii")


def split_credentials(url: str) -> tuple[str, str | None]:
    """The URL without its user:password, and those as Basic credentials (None if it has none):
    aiohttp would send them through BasicAuth, in Latin-1."""
    parts = urlsplit(url)
    if parts.username is None and parts.password is None:
        return url, None
    bare = urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    return bare, basic_credentials(unquote(parts.username or ""), unquote(parts.password or ""))


class AiohttpTransport:
    """Pushes over one aiohttp session (auth, tenant and TLS from the config)."""

    def __init__(self, config: LokiConfig) -> None:
        self.config = config
        self._session: aiohttp.ClientSession | None = None
        self._url, self._url_credentials = split_credentials(config.url)
        # Every text leaving here (errors, answer bodies) ends in logs, /ready and last_error.
        self.redact = Redactor(secret_values(config.url, config.username, config.password, config.bearer_token, config.headers))

    def _open(self) -> aiohttp.ClientSession:
        config = self.config
        headers = {"User-Agent": f"docker-loki-collector/{__version__}", **config.headers}
        if config.tenant:
            headers["X-Scope-OrgID"] = config.tenant
        if config.bearer_token:
            headers["Authorization"] = f"Bearer {config.bearer_token}"
        if config.username:
            headers["Authorization"] = basic_credentials(config.username, config.password)
        elif self._url_credentials is not None:
            headers["Authorization"] = self._url_credentials
        connector = aiohttp.TCPConnector(ssl=self._ssl_context(), limit=4)
        return aiohttp.ClientSession(
            headers=headers, connector=connector,
            timeout=aiohttp.ClientTimeout(total=config.timeout),
        )

    def _ssl_context(self) -> ssl.SSLContext | bool:
        tls = self.config.tls
        if not self.config.url.startswith("https://"):
            return True
        context = ssl.create_default_context(cafile=tls.ca_file or None)
        if tls.cert_file:
            context.load_cert_chain(tls.cert_file, tls.key_file or None)
        if tls.insecure_skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        return context

    async def post(self, body: bytes, headers: dict[str, str]) -> Reply:
        if self._session is None:
            self._session = self._open()
        try:
            async with self._session.post(self._url, data=body, headers=headers) as response:
                text = await response.text(errors="replace")
                # A gateway's error page may echo the credentials it was sent.
                return Reply(response.status, self.redact(text), response.headers.get("Retry-After"))
        except (aiohttp.ClientError, TimeoutError, OSError) as err:
            # `from None`: a traceback of the chained aiohttp error would show the raw URL.
            raise Unreachable(self.redact(describe_error(err, self._url, self.config.timeout))) from None

    async def close(self) -> None:
        if self._session is not None:
            session, self._session = self._session, None
            await session.close()
