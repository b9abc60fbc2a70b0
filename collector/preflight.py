"""The startup checks, shared by `collector` and `collector check-config`: what a config needs from
this machine (files it reads, a place to write positions, an address to listen on).

Errors stop the collector (exit 2); warnings name something it works around (a containers dir it
cannot read: every container is read through the Docker API instead). Nothing here changes the
machine: the positions dir is probed, not created.
"""

from __future__ import annotations

import errno
import os
import socket
import ssl
import tempfile
from dataclasses import dataclass, field

from collector.config import Config, LokiConfig

CONTAINERS_DIR_FALLBACK = "every container is read through the Docker API log stream"


@dataclass(slots=True)
class Findings:
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def preflight(config: Config, running: bool = False) -> Findings:
    """`running`: for the run itself, where a `metrics.listen` port in use is an error (before the
    collector starts); `check-config` beside a running collector only warns about it."""
    found = Findings()
    _add(found.errors, positions_problem(config.positions.path))
    found.errors += tls_problems(config.loki)
    if config.metrics.listen:
        error, warning = listen_problem(config.metrics.listen)
        _add(found.errors, error)
        if warning and running:
            _add(found.errors, _error("metrics.listen", config.metrics.listen, "cannot listen: address in use"))
        else:
            _add(found.warnings, warning)
    problem = containers_dir_problem(config.docker.containers_dir, config.sources.mode)
    _add(found.warnings, problem and f"{problem}: {CONTAINERS_DIR_FALLBACK}")
    return found


def _add(into: list[str], problem: str | None) -> None:
    if problem:
        into.append(problem)


def _error(key: str, value: str, why: str) -> str:
    return f"config error: {key} = {value!r}: {why}"


def positions_problem(path: str) -> str | None:
    """Fail at startup, not at the first checkpoint, when positions cannot be written."""
    if os.path.exists(path) and not os.path.isfile(path):
        return _error("positions.path", path, "exists and is not a regular file")
    directory = os.path.dirname(os.path.abspath(path))
    existing = directory
    while not os.path.exists(existing):  # the run creates the missing part; probe where it would start
        existing = os.path.dirname(existing)
    if not os.path.isdir(existing):
        return _error("positions.path", path, f"cannot write there: {existing} is not a directory")
    try:
        if existing == directory:
            with tempfile.NamedTemporaryFile(dir=directory, prefix=".probe-"):
                pass
        else:
            os.rmdir(tempfile.mkdtemp(dir=existing, prefix=".probe-"))
    except OSError as err:
        return _error("positions.path", path, f"cannot write there: {err.strerror}")
    return None


def _unreadable(path: str) -> str | None:
    try:
        with open(path, "rb"):
            return None
    except OSError as err:
        return f"cannot read: {err.strerror}"


def tls_problems(loki: LokiConfig) -> list[str]:
    """TLS files must be readable and hold what they claim (checked only for an https URL, the only
    one that uses them)."""
    tls = loki.tls
    if not loki.url.startswith("https://"):
        return []
    problems = [_error(f"loki.tls.{key}", path, why)
                for key, path in (("ca_file", tls.ca_file), ("cert_file", tls.cert_file), ("key_file", tls.key_file))
                if path and (why := _unreadable(path))]
    if problems:
        return problems
    if tls.key_file and not tls.cert_file:
        return [_error("loki.tls.key_file", tls.key_file, "needs loki.tls.cert_file")]
    try:
        context = ssl.create_default_context(cafile=tls.ca_file or None)
    except ssl.SSLError as err:
        return [_error("loki.tls.ca_file", tls.ca_file, f"not a PEM CA certificate: {err.reason or err}")]
    if tls.cert_file:
        try:
            context.load_cert_chain(tls.cert_file, tls.key_file or None)
        except ssl.SSLError as err:
            key, path = ("loki.tls.key_file", tls.key_file) if tls.key_file else ("loki.tls.cert_file", tls.cert_file)
            return [_error(key, path, f"not a PEM certificate and matching key: {err.reason or err}")]
    return []


def listen_problem(listen: str) -> tuple[str | None, str | None]:
    """(error, warning) for `metrics.listen`. A port in use is only a warning here: `check-config`
    next to a running collector finds its port taken; the run makes it an error (see preflight)."""
    host, _, port = listen.rpartition(":")
    host = host.strip("[]") or "0.0.0.0"
    try:
        infos = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as err:
        return _error("metrics.listen", listen, f"unknown host: {err.strerror}"), None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as err:
            if err.errno == errno.EADDRINUSE:
                return None, f"metrics.listen = {listen!r}: address in use now (by a running collector?)"
            why = "no interface of this machine has that address" if err.errno == errno.EADDRNOTAVAIL else err.strerror
            return _error("metrics.listen", listen, f"cannot listen: {why}"), None
    return None, None


def containers_dir_problem(directory: str, mode: str) -> str:
    """Why container log files cannot be read from `directory` ("" when they can)."""
    if mode == "stream":
        return ""
    try:
        os.listdir(directory)
        return ""
    except FileNotFoundError:
        return f"containers dir {directory} does not exist"
    except OSError as err:
        return f"containers dir {directory} is not readable (uid {os.getuid()}: {err.strerror})"
