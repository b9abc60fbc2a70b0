from __future__ import annotations

import os
import shutil
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(__file__))

import harness  # noqa: E402
from dockerengine import DockerEngine, start_engine  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def scratch_dir():
    """One temp dir for everything the collector runs write; removed at the end of the session."""
    harness.SCRATCH = tempfile.mkdtemp(prefix="collector-tests-")
    yield harness.SCRATCH
    shutil.rmtree(harness.SCRATCH, ignore_errors=True)


@pytest.fixture(scope="session")
def engine() -> DockerEngine:
    """A real Docker engine for the whole session; a private one is stopped at the end."""
    docker_engine = start_engine()
    yield docker_engine
    docker_engine.stop()


@pytest.fixture
def containers(engine: DockerEngine):
    """The engine, with every container a test starts removed (rm -f) when the test ends."""
    yield engine
    engine.cleanup_containers()


@pytest.fixture
def own_engine(engine: DockerEngine):
    """A second private engine, for tests that restart the daemon (restarting the shared one would
    disturb other tests)."""
    if engine._owned_dir is None:
        pytest.skip("needs a private dockerd to restart; the tests run against an external engine")
    private = start_engine(force_private=True)
    yield private
    private.stop()
