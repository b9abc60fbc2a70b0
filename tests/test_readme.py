"""The README's setup and test notes stay true to the code they describe."""

from __future__ import annotations

import os
import re

import dockerengine
import imagebuild

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(REPO, "README.md")).read()


def test_every_pip_install_comes_after_a_venv() -> None:
    blocks = re.findall(r"```sh\n(.*?)```", README, re.S)
    with_pip = [block for block in blocks if "pip install" in block]
    assert with_pip
    for block in with_pip:
        assert "-m venv" in block and block.index("-m venv") < block.index("pip install"), block


def test_images_left_behind_are_named_as_the_tests_name_them() -> None:
    for image in (dockerengine.IMAGE.removesuffix(":latest"), imagebuild.IMAGE, imagebuild.BASE_IMAGE):
        assert f"`{image}`" in README, image


def test_daemon_restart_tests_named_in_the_readme_use_own_engine() -> None:
    for path, test in (("tests/test_docker_restart.py", "test_collector_survives_a_daemon_restart"),
                       ("tests/test_streams.py", "test_dockerd_restarted_under_a_streaming_container")):
        source = open(os.path.join(REPO, path)).read()
        assert re.search(rf"def {test}\([^)]*own_engine", source), test
        assert os.path.basename(path) in README
    assert "test_dockerd_restarted_under_a_streaming_container" in README
    conftest = open(os.path.join(REPO, "tests", "conftest.py")).read()
    assert 'if engine._owned_dir is None:\n        pytest.skip(' in conftest  # skipped exactly when the session engine is external
