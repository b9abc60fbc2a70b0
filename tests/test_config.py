"""Config: YAML, env overrides, errors that name the key and exit 2, secrets masked."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import yaml

from collector.config import ConfigError, load_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("COLLECTOR_")}
    return subprocess.run([sys.executable, "-m", "collector", *args], env={**clean, "PYTHONPATH": REPO, **(env or {})},
                          capture_output=True, text=True, timeout=60, cwd=REPO)


@pytest.mark.parametrize(
    ("yaml_text", "env", "named"),
    [
        ("queue:\n  max_bytes: lots\n", {}, "queue.max_bytes = 'lots'"),
        ("loki:\n  url: ftp://loki\n", {}, "loki.url = 'ftp://loki'"),
        ("loki:\n  batch_max_wait: soon\n", {}, "loki.batch_max_wait = 'soon'"),
        ("", {"COLLECTOR_LOKI__ENCODING": "xml"}, "loki.encoding = 'xml'"),
        ("", {"COLLECTOR_SOURCES__POLL_INTERVAL": "-1"}, "sources.poll_interval = '-1'"),
        ("positions:\n  start_at: yesterday\n", {}, "positions.start_at = 'yesterday'"),
        ("loki:\n  tenat: x\n", {}, "loki.tenat = 'x': unknown key"),
        ("labels:\n  static:\n    bad-name: x\n", {}, "labels.static = 'bad-name'"),
        ("", {"COLLECTOR_METRICS__LISTEN": "abc"}, "metrics.listen = 'abc'"),
        ("metrics:\n  listen: 'localhost:99999'\n", {}, "metrics.listen = 'localhost:99999'"),
        ("relabel:\n  - {target_label: ok}\n  - {action: keepp, source_labels: [a]}\n", {}, "relabel[1].action = 'keepp'"),
        ("relabel:\n  - {target_label: x, regex: '(unclosed'}\n", {}, "relabel[0].regex = '(unclosed'"),
        ("relabel:\n  - {action: drop}\n", {}, "relabel[0].source_labels = []: drop needs source_labels"),
        ("relabel:\n  - {target_label: bad-name}\n", {}, "relabel[0].target_label = 'bad-name'"),
        ("selection:\n  mode: opt-in\n", {}, "selection.mode = 'opt-in'"),
        ("selection:\n  exclude:\n    images: ['/[/']\n", {}, "selection.exclude.images[0] = '/[/'"),
        ("labels:\n  docker_labels: {com.x.team: team-name}\n", {}, "labels.docker_labels.com.x.team = 'team-name'"),
        ("labels:\n  static: {" + ", ".join(f"s{i}: x" for i in range(11)) + "}\n", {},
         "these settings give each stream 16 label names"),
        # Enums and bools list what they accept.
        ("", {"COLLECTOR_LOKI__ENCODING": "xml"}, "loki.encoding = 'xml': accepted values: protobuf, json"),
        ("log:\n  level: INFO\n", {}, "log.level = 'INFO': accepted values: debug, info, warning, error"),
        ("", {"COLLECTOR_LOKI__GZIP": "maybe"}, "loki.gzip = 'maybe': accepted values: true, false"),
        ("loki:\n  tls:\n    insecure_skip_verify: sometimes\n", {},
         "loki.tls.insecure_skip_verify = 'sometimes': accepted values: true, false"),
        ("loki:\n  structured_metadata: [image, pod]\n", {},
         "loki.structured_metadata[1] = 'pod': accepted values: container_id, image"),
        ("sources:\n  mode: files\n", {}, "sources.mode = 'files': accepted values: auto, stream"),
        ("loki:\n  tls:\n    cafile: x\n", {}, "loki.tls.cafile = 'x': unknown key; did you mean loki.tls.ca_file?"),
        ("", {"COLLECTOR_LOKI__TLS_CA_FILE": "/ca.pem"}, "loki.tls_ca_file = '/ca.pem': unknown key; did you mean loki.tls.ca_file?"),
        ("queue:\n  max_bytes: [1]\n", {}, "queue.max_bytes = [1]: "),
        ("docker:\n  host: [1]\n", {}, "docker.host = [1]: Expected `str`, got `array`"),
        # RFC 7617: the user-id of Basic credentials ends at the first colon.
        ("loki:\n  username: 'team:a'\n  password: x\n", {}, "loki.username = 'team:a': must not contain ':'"),
        # What Loki (dskit's tenant.ValidTenantID) answers with a 400: every push would be lost.
        ("loki:\n  tenant: team a\n", {}, "loki.tenant = 'team a': Loki refuses ' ' in a tenant"),
        ("loki:\n  tenants_allowed: [ok, 'a|b']\n", {}, "loki.tenants_allowed[1] = 'a|b': "),
        ("loki:\n  tenant: '..'\n", {}, "loki.tenant = '..': "),
        ("", {"COLLECTOR_LOKI__TENANT": "x" * 151}, "loki.tenant = '" + "x" * 151 + "': "),
        # Header names are HTTP tokens, values have no line breaks (aiohttp would raise at every push).
        ("loki:\n  headers: {'X Team': a}\n", {}, "loki.headers = 'X Team': "),
        ("", {"COLLECTOR_LOKI__HEADERS": '{"X-Team": "a\\nb"}'}, "loki.headers.X-Team = '***': "),
        ("", {"COLLECTOR_LOKI__BEARER_TOKEN": "tok\nen"}, "loki.bearer_token = '***': "),
    ],
)
def test_bad_values_exit_2_naming_key_and_value(tmp_path, yaml_text: str, env: dict[str, str], named: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text(yaml_text)
    result = cli("--config", str(path), "check-config", env=env)
    assert result.returncode == 2
    assert named in result.stderr, result.stderr


def test_env_override_beats_yaml_and_secrets_are_masked(tmp_path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("loki:\n  url: http://from-yaml:3100/loki/api/v1/push\n  tenant: yaml\n  username: u\n  password: hunter2\n")
    result = cli("--config", str(path), "check-config", env={
        "COLLECTOR_LOKI__TENANT": "from-env",
        "COLLECTOR_LABELS__STATIC": '{"env": "prod"}',
        "COLLECTOR_QUEUE__MAX_BYTES": "32MiB",
    })
    assert result.returncode == 0, result.stderr
    shown = yaml.safe_load(result.stdout)
    assert shown["loki"]["tenant"] == "from-env"
    assert shown["loki"]["url"] == "http://from-yaml:3100/loki/api/v1/push"
    assert shown["labels"]["static"] == {"env": "prod"}
    assert shown["queue"]["max_bytes"] == 32 * 1024 * 1024
    assert shown["loki"]["password"] == "***" and "hunter2" not in result.stdout


def test_secret_from_file(tmp_path) -> None:
    secret = tmp_path / "token"
    secret.write_text("s3cret\n")
    config = load_config(None, {"COLLECTOR_LOKI__BEARER_TOKEN_FILE": str(secret)})
    assert config.loki.bearer_token == "s3cret"
    with pytest.raises(ConfigError, match="loki.bearer_token_file = '/nonexistent'"):
        load_config(None, {"COLLECTOR_LOKI__BEARER_TOKEN_FILE": "/nonexistent"})
    secret.write_text("two\nlines\n")  # a header value cannot hold a line break
    with pytest.raises(ConfigError, match="loki.bearer_token_file = '[^']*': holds a line break") as caught:
        load_config(None, {"COLLECTOR_LOKI__BEARER_TOKEN_FILE": str(secret)})
    assert "lines" not in str(caught.value)


def test_shipped_config_yaml_is_valid_and_matches_defaults() -> None:
    from_file = load_config(os.path.join(REPO, "config.yaml"), {})
    assert from_file == load_config(None, {})


def test_unwritable_positions_path_exits_2_before_running(tmp_path) -> None:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    result = cli(env={"COLLECTOR_POSITIONS__PATH": str(blocker / "positions.json"), "DOCKER_HOST": "unix:///nonexistent"})
    assert result.returncode == 2
    assert f"positions.path = '{blocker / 'positions.json'}'" in result.stderr


def test_duplicate_yaml_key_is_an_error_naming_file_line_and_key(tmp_path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("loki:\n  url: http://a:3100/loki/api/v1/push\n  tenant: t\n  url: http://b:3100/loki/api/v1/push\n")
    result = cli("check-config", "-c", str(path))
    assert result.returncode == 2
    assert result.stderr.strip() == f"config error: {path}:4:3: key 'url' given twice (first on line 2)"


def test_yaml_syntax_error_names_file_and_line(tmp_path) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("loki:\n  url: http://a\n   tenant: t\n")
    result = cli("-c", str(path), "check-config")
    assert result.returncode == 2
    assert result.stderr.startswith(f"config error: {path}:3:"), result.stderr
    assert "<unicode string>" not in result.stderr


@pytest.mark.parametrize(("name", "closest"), [
    ("COLLECTOR_LOKI_URL", "COLLECTOR_LOKI__URL"),
    ("collector_loki__url", "COLLECTOR_LOKI__URL"),
    ("COLLECTOR_POSITIONS_PATH", "COLLECTOR_POSITIONS__PATH"),
])
def test_env_var_naming_no_key_warns_with_the_closest_key(tmp_path, name: str, closest: str) -> None:
    result = cli("check-config", env={name: "http://loki:3100/loki/api/v1/push", "COLLECTOR_POSITIONS__PATH": str(tmp_path / "p.json")})
    assert result.returncode == 0, result.stderr
    assert f"warning: env {name} names no config key and is ignored; did you mean {closest}?" in result.stderr


def test_env_warning_also_in_the_run_log(tmp_path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("COLLECTOR_")}
    proc = subprocess.Popen([sys.executable, "-m", "collector"], cwd=REPO, text=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**clean, "PYTHONPATH": REPO, "DOCKER_HOST": "unix:///nonexistent", "COLLECTOR_METRICS__LISTEN": "",
                                 "COLLECTOR_POSITIONS__PATH": str(tmp_path / "p.json"), "COLLECTOR_LOKI_URL": "http://x"})
    try:
        assert proc.stderr is not None
        warned = next(line for line in proc.stderr if "COLLECTOR_LOKI_URL" in line or "collector starting" in line)
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert '"level":"warning"' in warned and "did you mean COLLECTOR_LOKI__URL?" in warned


def test_known_env_vars_raise_no_warning(tmp_path) -> None:
    result = cli("check-config", env={"COLLECTOR_LOKI__URL": "http://loki:3100/loki/api/v1/push", "COLLECTOR_CONFIG": "",
                                      "COLLECTOR_POSITIONS__PATH": str(tmp_path / "p.json")})
    assert result.returncode == 0
    assert "env " not in result.stderr


@pytest.mark.parametrize("command", ["run", "check-config", "status", "health"])
def test_config_option_before_or_after_the_subcommand(tmp_path, command: str) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("queue:\n  max_bytes: lots\n")
    assert "-c CONFIG, --config CONFIG" in cli(command, "--help").stdout
    for args in (["-c", str(path), command], [command, "-c", str(path)], [command, "--config", str(path)]):
        result = cli(*args)
        assert "queue.max_bytes = 'lots'" in result.stderr, (args, result.stderr)
        assert result.returncode == (1 if command == "health" else 2)
