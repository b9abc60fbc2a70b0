"""The collector's image, built by the test engine from the repo's Dockerfile.

No registry is reachable, so the base (Debian bookworm with Debian's python3, what the Dockerfile's
default BASE_IMAGE is) comes from debootstrap. Its tarball is cached between runs on the same machine
(COLLECTOR_BASE_CACHE, default /var/cache/collector-ci); a fresh machine makes it in about 40 s.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator

from dockerengine import DockerEngine

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASE_IMAGE = "collector-ci-base:bookworm"
IMAGE = "docker-loki-collector:test"
CACHE_DIR = os.environ.get("COLLECTOR_BASE_CACHE", "/var/cache/collector-ci")
MIRROR = os.environ.get("COLLECTOR_DEBIAN_MIRROR", "http://deb.debian.org/debian")
DEBOOTSTRAP = ["debootstrap", "--variant=minbase", "--include=python3,python3-venv", "bookworm"]
MAX_AGE = 30 * 86400  # refresh the cached base monthly: it carries Debian's security updates
# What the slim Debian images leave out too: package caches, docs, man pages, translations.
TRIM = ("var/cache/apt/archives/*.deb", "var/lib/apt/lists/*", "usr/share/man/*", "usr/share/info/*", "usr/share/locale/*")


@contextlib.contextmanager
def _locked(path: str) -> Iterator[None]:
    """Parallel test sessions on one machine build the cached base once."""
    with open(path + ".lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _cache_dir() -> str | None:
    try:
        os.makedirs(CACHE_DIR, exist_ok=True)
    except OSError:
        return None
    return CACHE_DIR if os.access(CACHE_DIR, os.W_OK) else None


def _debootstrap_tarball(target: str, workdir: str) -> None:
    if shutil.which("debootstrap") is None:
        raise RuntimeError("debootstrap is missing (apt-get install debootstrap): it makes the image's base")
    rootfs = tempfile.mkdtemp(prefix="rootfs-", dir=workdir)
    try:
        result = subprocess.run([*DEBOOTSTRAP, rootfs, MIRROR], capture_output=True, timeout=900)
        if result.returncode != 0:
            raise RuntimeError(f"debootstrap failed: {result.stdout.decode(errors='replace')[-3000:]}")
        for pattern in TRIM:
            for path in glob.glob(os.path.join(rootfs, pattern)):
                shutil.rmtree(path) if os.path.isdir(path) and not os.path.islink(path) else os.remove(path)
        for doc in glob.glob(os.path.join(rootfs, "usr/share/doc/*/*")):
            # Some packages' doc dirs are symlinks to another's: remove through the real dir only.
            if os.path.basename(doc) != "copyright" and not os.path.islink(os.path.dirname(doc)) and not os.path.isdir(doc):
                os.remove(doc)
        partial = target + ".partial"
        subprocess.run(["tar", "-C", rootfs, "--numeric-owner", "-cf", partial, "."], check=True, timeout=300)
        os.replace(partial, target)
    finally:
        # An interrupted debootstrap can leave proc/sys mounted inside the rootfs.
        subprocess.run(["sh", "-c", f"grep -o ' {rootfs}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l"], check=False)
        shutil.rmtree(rootfs, ignore_errors=True)


def base_tarball(scratch: str) -> str:
    """Path to the base rootfs tarball: the cached one if fresh, else a new one (cached when possible)."""
    cache = _cache_dir()
    directory = cache or scratch
    target = os.path.join(directory, "bookworm-python3-minbase.tar")
    with _locked(target) if cache else contextlib.nullcontext():
        if not (os.path.exists(target) and time.time() - os.path.getmtime(target) < MAX_AGE):
            _debootstrap_tarball(target, directory)
    return target


def import_base(engine: DockerEngine, scratch: str) -> None:
    if engine.docker("images", "-q", BASE_IMAGE):
        return
    with open(base_tarball(scratch), "rb") as tarball:
        result = subprocess.run(["docker", "import", "-", BASE_IMAGE], stdin=tarball, env=engine.env, capture_output=True, timeout=600)
    if result.returncode != 0:
        raise RuntimeError(f"docker import failed: {result.stderr.decode(errors='replace')}")


def local_ca_certificates() -> str:
    """The CAs this machine trusts beyond the public ones (e.g. a TLS-intercepting proxy's), as PEM,
    for pip inside the build."""
    return "".join(open(path).read() for path in sorted(glob.glob("/usr/local/share/ca-certificates/*.crt")))


def build_image(engine: DockerEngine) -> str:
    """docker build of the repo with the debootstrapped base; returns the build output."""
    # The private engine has no bridge: the build's RUN steps share the host's network.
    # DOCKER_BUILDKIT=0: the classic builder, the one Debian's docker.io has without buildx.
    result = subprocess.run(
        ["docker", "build", "--network", "host", "--build-arg", f"BASE_IMAGE={BASE_IMAGE}",
         "--build-arg", f"BUILD_CA_CERTS={local_ca_certificates()}", "-t", IMAGE, REPO],
        env={**engine.env, "DOCKER_BUILDKIT": "0"}, capture_output=True, timeout=900,
    )
    output = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
    if result.returncode != 0:
        raise RuntimeError(f"docker build failed:\n{output[-5000:]}")
    return output
