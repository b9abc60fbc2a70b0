from __future__ import annotations

import os
import sys

import pytest

sys.path.insert(0, os.path.dirname(__file__))

from dockerengine import DockerEngine, start_engine  # noqa: E402


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
