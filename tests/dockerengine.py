"""A real Docker engine for the tests: the one at DOCKER_HOST if reachable and its logs are readable
here, else a private dockerd started under a temp dir (and stopped afterwards).

The test image is imported from a rootfs holding a static busybox: no registry needed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass, field

IMAGE = "collector-test-busybox:latest"
APPLETS = ("sh", "echo", "sleep", "seq", "cat", "head", "tr", "awk", "yes", "dd", "printf", "true", "date", "kill")


class EngineUnavailable(RuntimeError):
    pass


@dataclass
class DockerEngine:
    host: str  # DOCKER_HOST value
    containers_dir: str
    image: str = IMAGE
    _owned_dir: str | None = None
    _pid: int | None = None
    _names: list[str] = field(default_factory=list)

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "DOCKER_HOST": self.host}

    def docker(self, *args: str, check: bool = True, timeout: float = 60, input: bytes | None = None) -> str:
        result = subprocess.run(
            ["docker", *args], env=self.env, capture_output=True, timeout=timeout, input=input
        )
        if check and result.returncode != 0:
            raise RuntimeError(f"docker {' '.join(args)} failed: {result.stderr.decode(errors='replace')}")
        return result.stdout.decode(errors="replace").strip()

    def run(self, script: str, *opts: str, name: str | None = None, detach: bool = True) -> str:
        """Start a busybox container running `sh -c script`; returns its id. Removed at session end."""
        name = name or f"t-{uuid.uuid4().hex[:10]}"
        self._names.append(name)
        args = ["run", "--network", "none", "--name", name, *opts]
        if detach:
            args.append("-d")
        out = self.docker(*args, self.image, "sh", "-c", script, timeout=120)
        return out.splitlines()[-1] if detach else self.docker("inspect", "-f", "{{.Id}}", name, check=False)

    def rm(self, *names_or_ids: str) -> None:
        if names_or_ids:
            self.docker("rm", "-f", *names_or_ids, check=False)

    def inspect(self, name_or_id: str) -> dict:
        return json.loads(self.docker("inspect", name_or_id))[0]

    def log_path(self, container_id: str) -> str:
        return os.path.join(self.containers_dir, container_id, f"{container_id}-json.log")

    def cleanup_containers(self) -> None:
        if self._names:
            self.docker("rm", "-f", *self._names, check=False)
            self._names.clear()

    def restart_daemon(self, down_for: float = 0.0) -> None:
        """Stop the private dockerd (its containers die with it) and start it again on the same data."""
        assert self._owned_dir and self._pid is not None, "only a private engine can be restarted"
        _stop_pid(self._pid)
        time.sleep(down_for)
        self._pid = _launch_dockerd(self._owned_dir)

    def stop(self) -> None:
        self.cleanup_containers()
        if self._pid is not None:
            _stop_pid(self._pid)
            self._pid = None
        if self._owned_dir:
            # The daemon leaves overlay mounts behind if it died hard; unmount before removing.
            subprocess.run(["sh", "-c", f"grep -o ' {self._owned_dir}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l"], check=False)
            shutil.rmtree(self._owned_dir, ignore_errors=True)
            self._owned_dir = None


def _stop_pid(pid: int, timeout: float = 20) -> None:
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = pid
        if done == pid:
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    try:
        os.waitpid(pid, 0)
    except ChildProcessError:
        pass


def _reachable(host: str) -> dict | None:
    env = {**os.environ, "DOCKER_HOST": host}
    try:
        result = subprocess.run(["docker", "info", "--format", "{{json .}}"], env=env, capture_output=True, timeout=15)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if result.returncode != 0:
        return None
    try:
        return json.loads(result.stdout)
    except ValueError:
        return None


def _launch_dockerd(base: str) -> int:
    """Start dockerd on the private dirs under `base`; returns its pid once it answers."""
    socket = os.path.join(base, "docker.sock")
    with open(os.path.join(base, "dockerd.log"), "ab") as log_file:
        process = subprocess.Popen(
            [
                "dockerd",
                "--data-root", os.path.join(base, "data"),
                "--exec-root", os.path.join(base, "exec"),
                "--pidfile", os.path.join(base, "dockerd.pid"),
                "-H", f"unix://{socket}",
                "--iptables=false", "--ip6tables=false", "--bridge=none",
                "--containerd-namespace", "collector-tests",
                "--containerd-plugins-namespace", "collector-tests-plugins",
            ],
            stdout=log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = open(os.path.join(base, "dockerd.log")).read()[-3000:]
            raise EngineUnavailable(f"dockerd exited with {process.returncode}:\n{log}")
        if os.path.exists(socket) and _reachable(f"unix://{socket}"):
            return process.pid
        time.sleep(0.2)
    _stop_pid(process.pid)
    raise EngineUnavailable("dockerd did not come up within 60 s")


def _start_private() -> DockerEngine:
    if shutil.which("dockerd") is None:
        raise EngineUnavailable("no reachable Docker engine and no dockerd (apt-get install docker.io busybox-static)")
    base = tempfile.mkdtemp(prefix="collector-dockerd-")
    engine = DockerEngine(f"unix://{os.path.join(base, 'docker.sock')}", os.path.join(base, "data", "containers"), _owned_dir=base)
    try:
        engine._pid = _launch_dockerd(base)
    except Exception:
        engine.stop()
        raise
    return engine


def _build_image(engine: DockerEngine) -> None:
    if engine.docker("images", "-q", engine.image):
        return
    busybox = shutil.which("busybox") or "/bin/busybox"
    with tempfile.TemporaryDirectory() as rootfs:
        os.makedirs(os.path.join(rootfs, "bin"))
        shutil.copy2(busybox, os.path.join(rootfs, "bin", "busybox"))
        for applet in APPLETS:
            os.symlink("busybox", os.path.join(rootfs, "bin", applet))
        tar = subprocess.run(["tar", "-C", rootfs, "-c", "."], capture_output=True, check=True).stdout
    engine.docker("import", "-", engine.image, input=tar, timeout=120)


def start_engine(force_private: bool = False) -> DockerEngine:
    host = os.environ.get("DOCKER_HOST") or "unix:///var/run/docker.sock"
    info = None if force_private else _reachable(host)
    engine: DockerEngine
    if info and os.access(os.path.join(info.get("DockerRootDir", ""), "containers"), os.R_OK | os.X_OK):
        engine = DockerEngine(host, os.path.join(info["DockerRootDir"], "containers"))
    else:
        engine = _start_private()
    try:
        _build_image(engine)
    except Exception:
        engine.stop()
        raise
    return engine
