"""The README and the reference pages under docs/ stay true to the code and files they describe."""

from __future__ import annotations

import glob
import os
import re

import dockerengine
import imagebuild

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
README = open(os.path.join(REPO, "README.md")).read()
TESTING = open(os.path.join(REPO, "docs", "testing.md")).read()
PAGES = {path: open(path).read() for path in [os.path.join(REPO, "README.md"), *sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))]}
FIRST_SCREEN = 40  # lines


def _sh_blocks(text: str) -> list[str]:
    return re.findall(r"```sh\n(.*?)```", text, re.S)


def test_every_pip_install_comes_after_a_venv() -> None:
    with_pip = [(path, block) for path, text in PAGES.items() for block in _sh_blocks(text) if "pip install" in block]
    assert any(path.endswith("README.md") for path, _ in with_pip)
    for path, block in with_pip:
        assert "-m venv" in block and block.index("-m venv") < block.index("pip install"), (path, block)


def test_both_commands_are_on_the_first_screen_and_the_test_command_is_the_one_ci_runs() -> None:
    ci = open(os.path.join(REPO, ".ci", "run")).read()
    ci_command = [line for line in ci.splitlines() if line.strip() and not line.startswith("#")][-1].strip()
    assert ci_command.startswith("python -m pytest"), ci_command
    first_screen = "\n".join(README.splitlines()[:FIRST_SCREEN])
    blocks = _sh_blocks(first_screen + "\n```")
    assert any(line.strip() == "docker compose up -d" for block in blocks for line in block.splitlines())
    commands = [line.split("#")[0].strip() for block in blocks for line in block.splitlines()]
    assert ci_command in commands, (ci_command, commands)
    assert 'python -m pytest -q -m "not docker"' in commands  # the fast logic-only subset


def test_readme_reads_in_two_minutes() -> None:
    assert len(README.splitlines()) <= 150


def test_images_left_behind_are_named_as_the_tests_name_them() -> None:
    for image in (dockerengine.IMAGE.removesuffix(":latest"), imagebuild.IMAGE, imagebuild.BASE_IMAGE):
        assert f"`{image}`" in TESTING, image


def test_daemon_restart_tests_named_in_the_docs_use_own_engine() -> None:
    for path, test in (("tests/test_docker_restart.py", "test_collector_survives_a_daemon_restart"),
                       ("tests/test_streams.py", "test_dockerd_restarted_under_a_streaming_container")):
        source = open(os.path.join(REPO, path)).read()
        assert re.search(rf"def {test}\([^)]*own_engine", source), test
        assert os.path.basename(path) in TESTING
    assert "test_dockerd_restarted_under_a_streaming_container" in TESTING
    conftest = open(os.path.join(REPO, "tests", "conftest.py")).read()
    assert 'if engine._owned_dir is None:\n        pytest.skip(' in conftest  # skipped exactly when the session engine is external


def test_test_files_the_pages_cite_exist() -> None:
    cited = {(path, name) for path, text in PAGES.items() for name in re.findall(r"`tests/(\w+\.py)(?:::(\w+))?`", text)}
    for page, (name, test) in cited:
        source_path = os.path.join(REPO, "tests", name)
        assert os.path.exists(source_path), (page, name)
        if test:
            assert re.search(rf"def {test}\(", open(source_path).read()), (page, name, test)


def test_no_page_speaks_of_issue_or_step_numbers() -> None:
    for path, text in PAGES.items():
        found = re.findall(r"\b(?:issue|step) #?\d+", text, re.I)
        assert not found, (path, found)


def test_every_image_the_compose_file_pins_is_named_as_pinned() -> None:
    compose = open(os.path.join(REPO, "docker-compose.yml")).read()
    pinned = dict(re.findall(r"^\s+image: ([\w./-]+):(\S+)$", compose, re.M))
    operations = PAGES[os.path.join(REPO, "docs", "operations.md")]
    for image, tag in pinned.items():
        if image == "docker-loki-collector":
            continue  # built from the Dockerfile
        assert f"`{image}:{tag}`" in operations, image
        for path, text in PAGES.items():  # no page names another version of a pinned image
            for other in re.findall(rf"{re.escape(image)}:([\w.-]+)", text):
                assert other == tag, (path, image, other)


def test_no_table_is_cut_by_a_blank_line() -> None:
    for path, text in PAGES.items():
        lines = text.splitlines() + ["", ""]
        for at, line in enumerate(lines[:-3]):
            # A row, a blank line, then more rows that are not a new table (no header separator).
            if line.startswith("|") and not lines[at + 1].strip() and lines[at + 2].startswith("|") \
                    and not lines[at + 3].startswith("|--"):
                raise AssertionError(f"{path}:{at + 2}: blank line inside a table")


def _anchors(text: str) -> set[str]:
    """GitHub's heading ids: lower case, punctuation dropped, spaces as hyphens."""
    return {re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
            for heading in re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", text, flags=re.S), re.M)}


def test_relative_links_and_their_anchors_resolve() -> None:
    for path, text in PAGES.items():
        for target in re.findall(r"\]\(([^)\s]+)\)", text):
            if re.match(r"https?://", target):
                continue
            file, _, anchor = target.partition("#")
            resolved = os.path.normpath(os.path.join(os.path.dirname(path), file)) if file else path
            assert os.path.exists(resolved), (path, target)
            if anchor and resolved.endswith(".md"):
                assert anchor in _anchors(open(resolved).read()), (path, target)
