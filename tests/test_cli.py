"""The CLI as an operator meets it: check-config checks what the run checks, clear exits, no tracebacks."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args: str, env: dict[str, str] | None = None, cwd: str = REPO) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("COLLECTOR_")}
    return subprocess.run([sys.executable, "-m", "collector", *args],
                          env={**clean, "PYTHONPATH": REPO, "DOCKER_HOST": "unix:///nonexistent", **(env or {})},
                          capture_output=True, text=True, timeout=60, cwd=cwd)


def base_env(tmp_path) -> dict[str, str]:
    """A config that passes every startup check: writable positions, readable containers dir, no metrics."""
    containers = tmp_path / "containers"
    containers.mkdir(exist_ok=True)
    return {
        "COLLECTOR_POSITIONS__PATH": str(tmp_path / "pos" / "positions.json"),
        "COLLECTOR_DOCKER__CONTAINERS_DIR": str(containers),
        "COLLECTOR_METRICS__LISTEN": "",
    }


# -- check-config checks what the run checks -----------------------------------------------------

def _unwritable_positions(tmp_path) -> tuple[dict[str, str], str]:
    blocker = tmp_path / "a-file"
    blocker.write_text("")
    path = blocker / "positions.json"
    return {"COLLECTOR_POSITIONS__PATH": str(path)}, f"positions.path = '{path}'"


def _missing_ca(tmp_path) -> tuple[dict[str, str], str]:
    return ({"COLLECTOR_LOKI__URL": "https://loki:3100/loki/api/v1/push", "COLLECTOR_LOKI__TLS__CA_FILE": "/nonexistent/ca.pem"},
            "loki.tls.ca_file = '/nonexistent/ca.pem'")


def _garbage_ca(tmp_path) -> tuple[dict[str, str], str]:
    ca = tmp_path / "ca.pem"
    ca.write_text("not a certificate\n")
    return ({"COLLECTOR_LOKI__URL": "https://loki:3100/loki/api/v1/push", "COLLECTOR_LOKI__TLS__CA_FILE": str(ca)},
            f"loki.tls.ca_file = '{ca}': not a PEM CA certificate")


def _missing_client_key(tmp_path) -> tuple[dict[str, str], str]:
    cert = tmp_path / "cert.pem"
    cert.write_text("")
    return ({"COLLECTOR_LOKI__URL": "https://loki:3100/loki/api/v1/push", "COLLECTOR_LOKI__TLS__CERT_FILE": str(cert),
             "COLLECTOR_LOKI__TLS__KEY_FILE": "/nonexistent/key.pem"},
            "loki.tls.key_file = '/nonexistent/key.pem'")


def _missing_password_file(tmp_path) -> tuple[dict[str, str], str]:
    return ({"COLLECTOR_LOKI__USERNAME": "u", "COLLECTOR_LOKI__PASSWORD_FILE": "/nonexistent/pw"},
            "loki.password_file = '/nonexistent/pw'")


def _foreign_listen_address(tmp_path) -> tuple[dict[str, str], str]:
    # 192.0.2.0/24 is TEST-NET-1: no interface of this machine has such an address.
    return {"COLLECTOR_METRICS__LISTEN": "192.0.2.1:9180"}, "metrics.listen = '192.0.2.1:9180'"


@pytest.mark.parametrize("case", [_unwritable_positions, _missing_ca, _garbage_ca, _missing_client_key, _missing_password_file,
                                  _foreign_listen_address])
def test_check_config_fails_like_the_run_with_the_same_message(tmp_path, case) -> None:
    overrides, named = case(tmp_path)
    env = {**base_env(tmp_path), **overrides}
    checked = cli("check-config", env=env)
    ran = cli(env=env)
    assert checked.returncode == 2, checked.stdout + checked.stderr
    assert ran.returncode == 2, ran.stderr
    assert named in checked.stderr, checked.stderr
    assert checked.stderr.strip() == ran.stderr.strip()
    assert "Traceback" not in ran.stderr


def test_check_config_does_not_create_the_positions_dir(tmp_path) -> None:
    env = base_env(tmp_path)
    assert cli("check-config", env=env).returncode == 0
    assert not (tmp_path / "pos").exists()


def test_missing_containers_dir_is_a_warning_not_an_error(tmp_path) -> None:
    # At run time the collector reads every container through the API then: not fatal.
    env = {**base_env(tmp_path), "COLLECTOR_DOCKER__CONTAINERS_DIR": str(tmp_path / "nope")}
    checked = cli("check-config", env=env)
    assert checked.returncode == 0, checked.stderr
    assert f"containers dir {tmp_path / 'nope'} does not exist" in checked.stderr
    assert "warning" in checked.stderr


# -- one collector per positions file; a busy metrics port --------------------------------------

def _start(env: dict[str, str]) -> subprocess.Popen[str]:
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("COLLECTOR_")}
    return subprocess.Popen([sys.executable, "-m", "collector"], cwd=REPO, text=True,
                            env={**clean, "PYTHONPATH": REPO, "DOCKER_HOST": "unix:///nonexistent", **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def test_second_collector_on_the_same_positions_file_exits_2(tmp_path) -> None:
    env = base_env(tmp_path)
    first = _start(env)
    try:
        assert first.stderr is not None
        for line in first.stderr:  # running once it logged its start (Docker unreachable: it retries)
            if "collector starting" in line:
                break
        second = cli(env=env)
        assert second.returncode == 2, second.stderr
        assert second.stderr.strip() == f"another collector holds {env['COLLECTOR_POSITIONS__PATH']}"
        assert first.poll() is None
    finally:
        first.terminate()
        first.wait(timeout=30)
    # Once the first has ended, the file is free again.
    again = _start(env)
    try:
        assert again.stderr is not None
        for line in again.stderr:
            if "collector starting" in line:
                break
        assert again.poll() is None
    finally:
        again.terminate()
        assert again.wait(timeout=30) == 0


def test_busy_metrics_port_exits_2_naming_the_address_before_starting(tmp_path) -> None:
    import socket

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        address = f"127.0.0.1:{taken.getsockname()[1]}"
        env = {**base_env(tmp_path), "COLLECTOR_METRICS__LISTEN": address}
        result = cli(env=env)
        checked = cli("check-config", env=env)
    assert result.returncode == 2, result.stderr
    # The one line, before anything starts: no `collector starting`, no positions file made.
    assert result.stderr.strip() == f"config error: metrics.listen = '{address}': cannot listen: address in use"
    assert not (tmp_path / "pos").exists()
    # check-config beside a running collector finds its port taken: a warning, not an error.
    assert checked.returncode == 0, checked.stderr
    assert f"warning: metrics.listen = '{address}': address in use now" in checked.stderr


# -- status and health with no collector running ------------------------------------------------

def _free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.mark.parametrize("command", ["status", "health"])
def test_status_and_health_with_no_collector_say_what_to_check(tmp_path, command) -> None:
    listen = f"127.0.0.1:{_free_port()}"  # nothing listens there
    result = cli(command, env={**base_env(tmp_path), "COLLECTOR_METRICS__LISTEN": listen})
    assert result.returncode == 1
    assert result.stdout == ""
    message = result.stderr.strip()
    assert "\n" not in message, message  # one line
    assert f"no collector answers at http://{listen} (connection refused)" in message, message
    assert f"metrics.listen = '{listen}'" in message and "running" in message, message
    assert "urlopen" not in message and "Errno" not in message, message


@pytest.mark.parametrize("command", ["status", "health"])
def test_status_and_health_with_an_explicit_url_name_it(tmp_path, command) -> None:
    url = f"http://127.0.0.1:{_free_port()}"
    result = cli(command, "--url", url, env=base_env(tmp_path))
    assert result.returncode == 1
    message = result.stderr.strip()
    assert message.endswith(f"no collector answers at {url} (connection refused): is it running there, "
                            "and is that its metrics.listen address?"), message


# -- `| head` ends the output, not with a traceback ----------------------------------------------

def test_check_config_into_head_has_no_traceback(tmp_path) -> None:
    env = {**{k: v for k, v in os.environ.items() if not k.upper().startswith("COLLECTOR_")},
           **base_env(tmp_path), "PYTHONPATH": REPO}
    # A long value makes the YAML bigger than a pipe buffer, so the write really meets the closed pipe.
    config = tmp_path / "big.yaml"
    config.write_text("loki:\n  headers:\n" + "".join(f"    X-L{i}: {'v' * 100}\n" for i in range(2000)))
    result = subprocess.run(["bash", "-c", f"{sys.executable} -m collector -c {config} check-config | head -3; exit ${{PIPESTATUS[0]}}"],
                            env=env, capture_output=True, text=True, timeout=60, cwd=REPO)
    assert result.stdout.count("\n") == 3
    assert result.stderr == "", result.stderr
    assert result.returncode == 0


def _pipeline(command: str, env: dict[str, str], timeout: float) -> subprocess.CompletedProcess[str]:
    """A shell pipeline in a session of its own, so a timeout ends every process of it, not only bash
    (a collector that never notices its reader left would otherwise outlive the test)."""
    import signal

    process = subprocess.Popen(["bash", "-c", command], env=env, cwd=REPO, text=True, start_new_session=True,
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        out, err = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.communicate()
        raise
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_collector_whose_reader_leaves_while_nothing_is_printed_stops(tmp_path) -> None:
    """The reader of stdout goes away while the collector has nothing to print (no Docker here:
    no line at all): it notices the closed pipe by itself and stops in order, checkpoint written."""
    env = base_env(tmp_path)
    clean = {k: v for k, v in os.environ.items() if not k.upper().startswith("COLLECTOR_")}
    process = subprocess.Popen([sys.executable, "-m", "collector"], cwd=REPO, text=True,
                               env={**clean, "PYTHONPATH": REPO, "DOCKER_HOST": "unix:///nonexistent", **env},
                               stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        assert process.stdout is not None and process.stderr is not None
        for line in process.stderr:
            if "collector starting" in line:
                break
        process.stdout.close()  # `| head` that has read what it wanted
        assert process.wait(timeout=60) == 0
        rest = process.stderr.read()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert "stdout was closed by its reader" in rest, rest
    assert "collector stopped" in rest and "Traceback" not in rest, rest
    assert os.path.exists(env["COLLECTOR_POSITIONS__PATH"])  # the final checkpoint


@pytest.mark.docker
def test_collector_into_head_stops_when_its_containers_go_quiet(tmp_path, containers) -> None:
    import json
    import time

    name = f"quiet-{time.monotonic_ns()}"
    # Exactly the lines head takes, then silence: no later write can meet the closed pipe.
    container_id = containers.run("echo one; echo two; echo three; sleep 3600", name=name)
    positions = tmp_path / "positions.json"
    env = {**{k: v for k, v in os.environ.items() if not k.upper().startswith("COLLECTOR_")},
           "PYTHONPATH": REPO, "DOCKER_HOST": containers.host, "COLLECTOR_DOCKER__CONTAINERS_DIR": containers.containers_dir,
           "COLLECTOR_POSITIONS__PATH": str(positions), "COLLECTOR_METRICS__LISTEN": "",
           "COLLECTOR_SELECTION__INCLUDE__NAMES": json.dumps([name])}
    result = _pipeline(f"{sys.executable} -m collector | head -3; exit ${{PIPESTATUS[0]}}", env, timeout=120)
    assert [json.loads(line)["line"] for line in result.stdout.splitlines()] == ["one", "two", "three"]
    assert "stdout was closed by its reader" in result.stderr, result.stderr
    assert "collector stopped" in result.stderr and "Traceback" not in result.stderr, result.stderr
    assert result.returncode == 0
    assert container_id.strip() in json.loads(positions.read_text())["containers"]


@pytest.mark.docker
def test_collector_into_head_stops_cleanly_and_keeps_positions(tmp_path, containers) -> None:
    import json
    import time

    name = f"head-{time.monotonic_ns()}"
    container_id = containers.run("i=0; while true; do echo tick $i; i=$((i+1)); sleep 0.05; done", name=name)
    positions = tmp_path / "positions.json"
    env = {**{k: v for k, v in os.environ.items() if not k.upper().startswith("COLLECTOR_")},
           "PYTHONPATH": REPO, "DOCKER_HOST": containers.host, "COLLECTOR_DOCKER__CONTAINERS_DIR": containers.containers_dir,
           "COLLECTOR_POSITIONS__PATH": str(positions), "COLLECTOR_METRICS__LISTEN": ""}
    # The collector stops by itself once head has gone: no signal, no timeout needed.
    result = _pipeline(f"{sys.executable} -m collector | head -3; exit ${{PIPESTATUS[0]}}", env, timeout=120)
    assert result.stdout.count("\n") == 3
    assert "Traceback" not in result.stderr and "Exception ignored" not in result.stderr, result.stderr
    assert "stdout was closed by its reader" in result.stderr
    assert "collector stopped" in result.stderr
    assert result.returncode == 0
    saved = json.loads(positions.read_text())["containers"]
    assert container_id.strip() in saved
