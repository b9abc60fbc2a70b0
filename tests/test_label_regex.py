"""Regular expressions from container labels cannot stall the loop: they run on RE2 (no
backtracking); one RE2 cannot compile is reported and ignored for that container alone."""

from __future__ import annotations

import signal
from collections.abc import Iterator
from contextlib import contextmanager

import msgspec

from collector.config import Config, decode_hook
from collector.docker.containers import ContainerInfo, log_attributes
from collector.pipeline.entry import Entry
from collector.transform.labeling import Profiler
from collector.transform.lines import ProcessingStats, build_processor

T = 1_795_372_655_000_000_000
EVIL = "(a+)+$"  # backtracking engines take 2^n steps on "aaa...a!"
EVIL_LINE = "a" * 40 + "!"  # with Python's re: hours


@contextmanager
def alarm(seconds: float) -> Iterator[None]:
    """Fails the test instead of hanging it on a backtracking engine (Python's re checks signals)."""

    def expire(*_: object) -> None:
        raise TimeoutError(f"a label regex held the thread for over {seconds:g}s")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def processing(**tree):
    return msgspec.convert({"processing": tree}, Config, dec_hook=decode_hook, strict=False).processing


def entries(*lines: str) -> list[Entry]:
    return [Entry(T + i, line, "stdout") for i, line in enumerate(lines)]


def info(**labels: str) -> ContainerInfo:
    return ContainerInfo(id="c" * 64, name="web", image="img", labels=labels, log_driver="json-file", running=True)


def test_a_nested_quantifier_in_collector_drop_matches_in_linear_time() -> None:
    stats = ProcessingStats()
    problems: list[str] = []
    processor = build_processor(processing(), {"collector.drop": EVIL}, stats, problems)
    assert processor is not None and problems == []
    with alarm(10):
        kept = processor.process(entries(EVIL_LINE, "xaaaa", "b" * 100_000 + "!"))
    assert [entry.line[:5] for entry in kept] == ["aaaaa", "bbbbb"], "only the line ending in a run of a's is dropped"
    assert stats.dropped == {"label collector.drop": 1}


def test_a_nested_quantifier_in_collector_keep_matches_in_linear_time() -> None:
    processor = build_processor(processing(), {"collector.keep": "^(x+x+)+y"}, ProcessingStats(), [])
    assert processor is not None
    with alarm(10):
        kept = processor.process(entries("x" * 40, "xxy", "z"))
    assert [entry.line for entry in kept] == ["xxy"]


def test_a_nested_quantifier_in_collector_multiline_matches_in_linear_time() -> None:
    problems: list[str] = []
    joiner = Profiler(Config()).joiner(info(**{"collector.multiline": "^(a|aa)+$"}), 1 << 20, problems)
    assert joiner is not None and problems == []
    with alarm(10):
        assert joiner.continues("a" * 40 + "!")  # not a first line: it continues the previous entry
        assert not joiner.continues("aaaa")


def test_a_pattern_re2_cannot_compile_is_reported_and_ignored_for_that_container_only() -> None:
    stats = ProcessingStats()
    for label, text in (("collector.drop", r"(a)\1"), ("collector.keep", "(?=a)b"), ("collector.drop", "(?<!x)y")):
        problems: list[str] = []
        assert build_processor(processing(), {label: text}, stats, problems) is None
        assert len(problems) == 1 and label in problems[0] and "RE2" in problems[0]
    problems = []
    assert Profiler(Config()).joiner(info(**{"collector.multiline": r"(\w)\1"}), 1 << 20, problems) is None
    assert len(problems) == 1 and "collector.multiline" in problems[0]
    # Another container's good label still works.
    assert build_processor(processing(), {"collector.drop": "^GET /healthz"}, stats, []) is not None


def test_dockers_labels_regex_log_option_is_matched_as_docker_does_with_re2() -> None:
    """Docker checks `labels-regex` with Go's regexp (RE2 syntax), so RE2 is the faithful engine too."""
    labels = {"a" * 40 + "!": "1", "app": "2"}
    with alarm(10):
        attrs = log_attributes({"labels-regex": EVIL}, labels, [])
    assert attrs == {}
    assert log_attributes({"labels-regex": "^ap+$"}, labels, []) == {"app": "2"}
