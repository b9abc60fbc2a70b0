"""Selection, labels, relabel rules and Loki's limits: pure, no Docker."""

from __future__ import annotations

import msgspec
import pytest

from collector.config import Config, ConfigError, RelabelRule, decode_hook
from collector.config.labelbudget import check_label_budget, label_budget_problem
from collector.docker.containers import ContainerInfo, log_attributes
from collector.transform import relabel
from collector.transform.labeling import Profiler, compile_rules, sanitize


def config(**tree) -> Config:
    return msgspec.convert(tree, Config, dec_hook=decode_hook, strict=False)


def rules(*specs: dict) -> list[relabel.Rule]:
    return compile_rules([msgspec.convert(spec, RelabelRule) for spec in specs])


def info(name: str = "web-1", image: str = "nginx:1.25", **labels: str) -> ContainerInfo:
    return ContainerInfo("f" * 64, name, image, dict(labels), running=True)


BASE = {"container_name": "web-1", "team": "payments", "__meta_docker_container_name": "/web-1"}


# -- one test per relabel action ------------------------------------------------------------------
def test_replace_with_capture_groups_and_empty_result_removes() -> None:
    out, _ = relabel.apply(rules({"source_labels": ["__meta_docker_container_name"], "regex": "/(.*)-(\\d+)",
                                  "target_label": "app", "replacement": "${1}_$2"}), BASE)
    assert out is not None and out["app"] == "web_1"
    out, _ = relabel.apply(rules({"source_labels": ["nothing"], "regex": "(.*)", "target_label": "team"}), BASE)
    assert out is not None and "team" not in out  # Prometheus: an empty replacement removes the label
    out, _ = relabel.apply(rules({"source_labels": ["team"], "regex": "ops", "target_label": "x", "replacement": "y"}), BASE)
    assert out == BASE  # no match: nothing changes


def test_replace_joins_source_labels_with_the_separator_and_anchors_the_regex() -> None:
    out, _ = relabel.apply(rules({"source_labels": ["team", "container_name"], "separator": "/",
                                  "regex": "pay.*/web-1", "target_label": "both", "replacement": "yes"}), BASE)
    assert out is not None and out["both"] == "yes"
    out, _ = relabel.apply(rules({"source_labels": ["team"], "regex": "pay", "target_label": "p", "replacement": "x"}), BASE)
    assert out is not None and "p" not in out  # "pay" does not match all of "payments"


def test_keep_and_drop_decide_on_the_joined_value() -> None:
    assert relabel.apply(rules({"action": "keep", "source_labels": ["team"], "regex": "payments"}), BASE)[0] == BASE
    assert relabel.apply(rules({"action": "keep", "source_labels": ["team"], "regex": "ops"}), BASE) == (None, 0)
    assert relabel.apply(rules({"action": "keep", "source_labels": ["team"], "regex": "payments"},
                               {"action": "drop", "source_labels": ["container_name"], "regex": "web-.*"}), BASE) == (None, 1)


def test_labelmap_labeldrop_labelkeep() -> None:
    labels = {"__meta_docker_container_label_com_example_tier": "db", "__meta_docker_container_label_owner": "ann", "a": "1"}
    out, _ = relabel.apply(rules({"action": "labelmap", "regex": "__meta_docker_container_label_com_example_(.+)"}), labels)
    assert out is not None and out["tier"] == "db" and "owner" not in out
    out, _ = relabel.apply(rules({"action": "labeldrop", "regex": "a|__meta_.*owner"}), labels)
    assert out == {"__meta_docker_container_label_com_example_tier": "db"}
    out, _ = relabel.apply(rules({"action": "labelkeep", "regex": "a"}), labels)
    assert out == {"a": "1"}


# -- selection -------------------------------------------------------------------------------------
def test_selection_label_opt_in_include_and_exclude() -> None:
    default = Profiler(Config())
    assert default.profile(info(), "h").excluded_by == ""
    assert default.profile(info(**{"collector.enable": "false"}), "h").excluded_by == "label collector.enable=false"
    opt_in = Profiler(config(selection={"mode": "opt_in"}))
    assert opt_in.profile(info(), "h").excluded_by.startswith("selection.mode opt_in")
    assert opt_in.profile(info(**{"collector.enable": "true"}), "h").excluded_by == ""
    lists = Profiler(config(selection={"exclude": {"names": ["*-debug"], "images": ["/.*:dev$/"]},
                                       "include": {"compose_projects": ["shop"], "names": ["keep-*"]}}))
    shop = {"com.docker.compose.project": "shop"}
    assert lists.profile(info("api-debug", **shop), "h").excluded_by == "selection.exclude.names[0] '*-debug'"
    assert lists.profile(info("api", "app:dev", **shop), "h").excluded_by == "selection.exclude.images[0] '/.*:dev$/'"
    assert lists.profile(info("api", **shop), "h").excluded_by == ""
    assert lists.profile(info("keep-me"), "h").excluded_by == ""
    assert lists.profile(info("other"), "h").excluded_by == "selection.include (matches none)"


# -- labels ----------------------------------------------------------------------------------------
def test_labels_from_metadata_mappings_container_labels_and_rules() -> None:
    profiler = Profiler(config(
        labels={"static": {"env": "prod"}, "metadata": ["image", "compose_oneoff"],
                "docker_labels": {"com.example.team": "team"}, "attrs": {"region": "region"}},
        relabel=[{"source_labels": ["__meta_docker_container_label_com_example_tier"], "target_label": "tier"},
                 {"action": "labeldrop", "regex": "compose_oneoff"}],
    ))
    container = info("web-1", **{"com.example.team": "pay", "com.example.tier": "front", "collector.label.owner-name": "ann",
                                 "com.docker.compose.project": "shop", "com.docker.compose.service": "web"})
    container.log_attrs = {"region": "eu", "build": "42"}
    profile = profiler.profile(container, "host-a")
    assert profile.labels == {"container_name": "web-1", "compose_project": "shop", "compose_service": "web", "host": "host-a",
                              "env": "prod", "image": "nginx:1.25", "team": "pay", "region": "eu", "owner_name": "ann",
                              "tier": "front"}
    assert profile.metadata == {"build": "42"}  # unmapped log attributes: structured metadata


def test_limits_trim_at_run_time_and_refuse_at_startup() -> None:
    profiler = Profiler(config(labels={"max_label_names": 6, "max_value_length": 16}))
    many = info(**{f"collector.label.l{i}": "v" for i in range(5)}, **{"com.docker.compose.project": "p" * 40})
    profile = profiler.profile(many, "h")
    assert len(profile.labels) == 5  # and `stream`, which the sink adds: 6
    assert profile.labels["compose_project"] == "p" * 16
    assert sorted(t.split(":")[0] for t in profile.trimmed) == ["label compose_project", "label l2", "label l3", "label l4"]

    sixteen = {f"s{i}": "x" for i in range(11)}  # + container_name, compose_project, compose_service, host, stream
    assert "16 label names" in label_budget_problem(config(labels={"static": sixteen}))
    assert label_budget_problem(config(labels={"static": sixteen}, relabel=[{"action": "labeldrop", "regex": "s10"}])) == ""
    with pytest.raises(ConfigError):
        check_label_budget(config(labels={"static": sixteen}))


def test_settings_from_collector_labels() -> None:
    profiler = Profiler(Config())
    profile = profiler.profile(info(**{"collector.mode": "stream", "collector.max_line_bytes": "64KiB", "collector.tenant": "t1"}), "h")
    assert (profile.mode, profile.max_line_bytes, profile.tenant) == ("stream", 65536, "t1")
    bad = profiler.profile(info(**{"collector.mode": "fast", "collector.max_line_bytes": "huge"}), "h")
    assert bad.mode == "" and bad.max_line_bytes is None and len(bad.problems) == 2


def test_sanitize_and_log_attributes() -> None:
    assert sanitize("com.example/team-name") == "com_example_team_name" and sanitize("1x") == "_1x"
    attrs = log_attributes({"labels": "a,missing", "env": "HOME", "env-regex": "^APP_"},
                           {"a": "1", "b": "2"}, ["HOME=/root", "APP_X=y", "OTHER=z"])
    assert attrs == {"a": "1", "HOME": "/root", "APP_X": "y"}


def test_tenant_outside_the_allowlist_is_skipped_or_sent_to_the_default() -> None:
    asking = info(**{"collector.tenant": "team-b"})
    skip = Profiler(config(loki={"tenants_allowed": ["team-a"]}))
    assert skip.profile(info(**{"collector.tenant": "team-a"}), "h").tenant == "team-a"
    refused = skip.profile(asking, "h")
    assert (refused.excluded_by, refused.skip_reason) == ("tenant 'team-b' not in loki.tenants_allowed", "tenant_refused")
    default = Profiler(config(loki={"tenants_allowed": ["team-a"], "tenant_refused": "default"})).profile(asking, "h")
    assert default.excluded_by == "" and default.tenant == "" and "default tenant" in default.problems[0]
