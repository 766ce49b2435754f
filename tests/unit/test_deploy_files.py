"""Static checks of deploy/: the files parse, agree with each other and with the code.

No external tools here (those checks are in tests/integration/test_deploy.py): JSON/YAML
parse, every PromQL expression uses only the metrics of docs/architecture.md, every
``EDGE_*`` variable a deployment sets is a real setting, the Kubernetes objects reference
each other correctly, the systemd unit is sandboxed, the Dockerfiles build what they say.

Why one module of this size: the checks are cross-references between deploy/ files and the
code (metrics, settings, objects), so they share the readers of those files in the
"shared helpers" section at the top; one section per kind of file.
"""

from __future__ import annotations

import fnmatch
import json
import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest
import yaml

from edge_agent.config import SETTING_NAMES as AGENT_SETTINGS
from stream.settings import KafkaSettings

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
ARCHITECTURE = ROOT / "docs" / "architecture.md"
DASHBOARD = DEPLOY / "grafana" / "dashboards" / "edgeinfer.json"
ALERTS = DEPLOY / "prometheus" / "alerts.yml"
K8S = DEPLOY / "k8s"
UNIT = DEPLOY / "systemd" / "edgeinfer-agent.service"
AGENT_ENV = DEPLOY / "systemd" / "agent.env.example"

# ----------------------------------------------------------------- shared helpers
# (tests/integration/test_deploy.py imports these)


def documented_metrics(path: Path = ARCHITECTURE) -> dict[str, str]:
    """``{metric name: type}`` from the "Metrics" table of docs/architecture.md."""
    text = path.read_text()
    section = text.split("## Metrics", 1)[1].split("\n## ", 1)[0]
    metrics: dict[str, str] = {}
    for line in section.splitlines():
        match = re.match(r"\|\s*`(edge_agent_\w+)`\s*\|\s*([^|]*)\|", line)
        if match and "via Prometheus" not in line:
            metrics[match.group(1)] = match.group(2).strip()
    return metrics


def documented_monitor_metrics(path: Path = ARCHITECTURE) -> dict[str, str]:
    """``{metric name: type}`` from the "Monitor metrics" table (``edgeinfer monitor``)."""
    section = path.read_text().split("## Monitor metrics", 1)[1].split("\n## ", 1)[0]
    return {
        m.group(1): m.group(2).strip()
        for m in re.finditer(r"^\|\s*`(edgeinfer_\w+)`\s*\|\s*([^|]*)\|", section, re.M)
    }


def queryable_metrics() -> dict[str, str]:
    """What dashboards and alerts may select: the agents' and the monitor's metrics."""
    return {**documented_metrics(), **documented_monitor_metrics()}


def allowed_series_names(metrics: dict[str, str]) -> set[str]:
    """Names a query may use: each metric, a histogram's _bucket/_sum/_count, and ``up``."""
    names = {"up"}
    for name, kind in metrics.items():
        names.add(name)
        if kind.startswith("histogram"):
            names.update(f"{name}{suffix}" for suffix in ("_bucket", "_sum", "_count"))
    return names


_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "offset",
    "bool",
    "inf",
    "nan",
}


def promql_metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (functions, labels, keywords removed)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"'(?:[^'\\]|\\.)*'", "''", text)
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = re.sub(
        r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", " ", text
    )  # grouping label lists
    text = re.sub(r"\$\{[^}]*\}|\$\w+", " ", text)  # Grafana variables
    names = set()
    for match in re.finditer(r"(?<![\w.$])([A-Za-z_:][\w:]*)(?!\w)(\s*\()?", text):
        word, call = match.group(1), match.group(2)
        if call or word.lower() in _KEYWORDS:
            continue
        names.add(word)
    return names


def dashboard_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """``(panel title, expr)`` for every query of every panel (rows' panels included)."""
    out = []

    def walk(panels: list[dict[str, Any]]) -> None:
        for panel in panels:
            for target in panel.get("targets", []):
                out.append((panel.get("title", "?"), target["expr"]))
            walk(panel.get("panels", []))

    walk(dashboard["panels"])
    return out


def alert_rules() -> list[dict[str, Any]]:
    data = yaml.safe_load(ALERTS.read_text())
    return [rule for group in data["groups"] for rule in group["rules"]]


def known_edge_variables() -> set[str]:
    """Every ``EDGE_*`` variable the code reads: Kafka and agent settings, log level, config."""
    names = {f.name for f in fields(KafkaSettings)} | set(AGENT_SETTINGS) | {"log_level", "config"}
    return {f"EDGE_{name.upper()}" for name in names}


def load_k8s() -> dict[tuple[str, str], dict[str, Any]]:
    """``{(kind, name): object}`` of every manifest in deploy/k8s/ (examples included)."""
    objects = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and "kind" in doc and doc["kind"] != "Kustomization":
                objects[(doc["kind"], doc["metadata"]["name"])] = doc
    return objects


def unit_directives(path: Path = UNIT) -> dict[str, list[str]]:
    """``{"Section.Key": [values...]}`` of a systemd unit (keys may repeat)."""
    out: dict[str, list[str]] = {}
    section = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path}: not key=value: {raw!r}"
        out.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return out


# ----------------------------------------------------------------- PromQL name checks


def test_metric_table_is_read_from_the_architecture_doc() -> None:
    metrics = documented_metrics()
    assert metrics["edge_agent_inference_duration_seconds"].startswith("histogram")
    assert metrics["edge_agent_model_swaps_total"] == "counter"
    # The table is the agent's metrics exactly: every family AgentMetrics registers is
    # documented, and nothing documented is missing from the code.
    from prometheus_client import CollectorRegistry

    from edge_agent.metrics import AgentMetrics

    registry = CollectorRegistry()
    AgentMetrics(registry=registry)
    registered = {
        family.name + ("_total" if family.type == "counter" else "")
        for family in registry.collect()
    }
    assert set(metrics) == registered, (
        f"undocumented: {sorted(registered - set(metrics))}; "
        f"documented but not registered: {sorted(set(metrics) - registered)}"
    )


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            "histogram_quantile(0.99, sum by (le, model) "
            '(rate(edge_agent_e2e_latency_seconds_bucket{job="$job"}[$__rate_interval])))',
            {"edge_agent_e2e_latency_seconds_bucket"},
        ),
        (
            "sum(rate(a_total[5m])) / sum(rate(b_total[5m])) > 0.05 and on (job) up offset 10m",
            {"a_total", "b_total", "up"},
        ),
        ('label_replace(x, "condition", "fleet_silent", "job", ".*") > 1e3', {"x"}),
        ("max by (topic, partition) (lag) unless ignoring(instance) absent(y)", {"lag", "y"}),
    ],
)
def test_promql_metric_names_extracts_selectors(expr: str, names: set[str]) -> None:
    assert promql_metric_names(expr) == names


def test_monitor_metric_table_is_what_the_monitor_serves() -> None:
    """docs/architecture.md's "Monitor metrics", docs/metrics.md and fleet/monitor.py agree."""
    from fleet.monitor import Monitor, MonitorConfig, monitor_registry

    documented = documented_monitor_metrics()
    assert documented["edgeinfer_online_accuracy"] == "gauge"
    assert documented["edgeinfer_online_joined_total"] == "counter"
    served = {
        family.name + ("_total" if family.type == "counter" else ""): family.type
        for family in monitor_registry(Monitor(MonitorConfig())).collect()
    }
    assert documented == served
    reference = (ROOT / "docs" / "metrics.md").read_text()
    assert set(re.findall(r"^\| `(edgeinfer_\w+)` \|", reference, re.M)) == set(served)


def test_name_check_rejects_a_metric_not_in_the_table() -> None:
    allowed = allowed_series_names(documented_metrics())
    used = promql_metric_names("rate(edge_agent_messages_consumed_total[5m]) + edge_agent_typo")
    assert used - allowed == {"edge_agent_typo"}


# ----------------------------------------------------------------- Grafana


def test_dashboard_is_valid_json_with_uid_and_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["uid"] == "edgeinfer-fleet"
    assert dashboard["title"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    # The default is the provisioned datasource's uid.
    provisioned = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/datasources/prometheus.yml").read_text()
    )
    assert variables["datasource"]["current"]["value"] == provisioned["datasources"][0]["uid"]


def test_every_panel_and_query_uses_the_datasource_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    ids = []
    for panel in dashboard["panels"]:
        ids.append(panel["id"])
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${datasource}", panel["title"]
    assert len(ids) == len(set(ids)), "panel ids must be unique"


def test_dashboard_panels_do_not_overlap() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    cells: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        g = panel["gridPos"]
        assert 0 <= g["x"] and g["x"] + g["w"] <= 24, panel["title"]
        for x in range(g["x"], g["x"] + g["w"]):
            for y in range(g["y"], g["y"] + g["h"]):
                assert (x, y) not in cells, f"{panel['title']} overlaps {cells[(x, y)]}"
                cells[(x, y)] = panel["title"]


def test_dashboard_queries_use_only_documented_metrics() -> None:
    allowed = allowed_series_names(queryable_metrics())
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = dashboard_exprs(dashboard)
    assert len(exprs) >= 20
    for title, expr in exprs:
        used = promql_metric_names(expr)
        assert used, f"{title}: no metric in {expr!r}"
        assert used <= allowed, f"{title}: unknown metric(s) {used - allowed} in {expr!r}"
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            match = re.fullmatch(r"label_values\((\w+)(\{.*\})?, *\w+\)", variable["definition"])
            assert match and match.group(1) in allowed, variable["definition"]


def test_dashboard_shows_every_required_view() -> None:
    used = set()
    for _, expr in dashboard_exprs(json.loads(DASHBOARD.read_text())):
        used |= promql_metric_names(expr)
    required = {
        "edge_agent_messages_consumed_total",  # throughput in
        "edge_agent_results_produced_total",  # throughput out
        "edge_agent_inference_duration_seconds_bucket",  # latency quantiles
        "edge_agent_e2e_latency_seconds_bucket",
        "edge_agent_deadletters_total",  # by reason
        "edge_agent_consumer_lag",  # per partition
        "edge_agent_model_info",  # version per agent
        "edge_agent_model_swaps_total",
        "edge_agent_batch_size_bucket",
        "edge_agent_windows_open",
        "edge_agent_ready",
    }
    assert required <= used, required - used
    exprs = [e for _, e in dashboard_exprs(json.loads(DASHBOARD.read_text()))]
    for q in ("0.5", "0.95", "0.99"):
        assert any(f"histogram_quantile({q}, " in e and "e2e" in e for e in exprs), q
        assert any(f"histogram_quantile({q}, " in e and "inference" in e for e in exprs), q
    assert any("sum by (reason)" in e and "deadletters" in e for e in exprs)
    assert any("by (topic, partition)" in e and "consumer_lag" in e for e in exprs)
    # Model quality in the field: drift, confidence, online accuracy (issue 14).
    quality = {
        "edge_agent_input_drift_score",
        "edge_agent_low_confidence_ratio",
        "edge_agent_result_confidence_bucket",
        "edgeinfer_online_accuracy",
    }
    assert quality <= used, quality - used


def test_dashboard_provider_path_matches_the_compose_mount() -> None:
    provider = yaml.safe_load(
        (DEPLOY / "grafana/provisioning/dashboards/dashboards.yml").read_text()
    )["providers"][0]
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    mounts = compose["services"]["grafana"]["volumes"]
    assert f"./grafana/dashboards:{provider['options']['path']}:ro" in mounts
    assert "./grafana/provisioning:/etc/grafana/provisioning:ro" in mounts


# ----------------------------------------------------------------- alert rules


REQUIRED_ALERTS = {
    "EdgeAgentDown",
    "EdgeConsumerLagGrowing",
    "EdgeDeadLetterRateHigh",
    "EdgeInferenceLatencyP99High",
    "EdgeModelSwapRefused",
    "EdgeNoResults",
    "EdgeInputDrift",
    "EdgeLowConfidence",
    "EdgeOnlineAccuracyLow",
}


def test_alerts_exist_with_severity_annotations_and_runbook() -> None:
    rules = alert_rules()
    names = {r["alert"] for r in rules}
    assert names >= REQUIRED_ALERTS, REQUIRED_ALERTS - names
    readme = (DEPLOY / "README.md").read_text()
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", h.lower()).replace(" ", "-")
        for h in re.findall(r"^#+ (.+)$", readme, flags=re.M)
    }
    for rule in rules:
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        annotations = rule["annotations"]
        for key in ("summary", "description", "runbook", "runbook_url"):
            assert annotations.get(key), f"{rule['alert']}: no {key}"
        page, _, anchor = annotations["runbook_url"].partition("#")
        assert page == "deploy/README.md"
        assert anchor in anchors, f"{rule['alert']}: README has no section #{anchor}"


def test_alert_rules_use_only_documented_metrics() -> None:
    allowed = allowed_series_names(queryable_metrics())
    for rule in alert_rules():
        used = promql_metric_names(rule["expr"])
        assert used, rule["alert"]
        assert used <= allowed, f"{rule['alert']}: unknown metric(s) {used - allowed}"


def test_alert_rules_match_the_brief() -> None:
    rules = {r["alert"]: r for r in alert_rules()}
    assert "up{" in rules["EdgeAgentDown"]["expr"] and rules["EdgeAgentDown"]["for"] == "1m"
    assert "deriv(edge_agent_consumer_lag[10m])" in rules["EdgeConsumerLagGrowing"]["expr"]
    assert "> 0.05" in rules["EdgeDeadLetterRateHigh"]["expr"]
    assert rules["EdgeDeadLetterRateHigh"]["for"] == "5m"
    latency = rules["EdgeInferenceLatencyP99High"]
    flat = " ".join(latency["expr"].split())
    assert flat.startswith("histogram_quantile( 0.99, ") and flat.endswith("> 0.1")
    assert latency["for"] == "5m"
    swap = rules["EdgeModelSwapRefused"]["expr"]
    assert 'increase(edge_agent_model_swaps_total{result="refused"}[10m]) > 0' in swap
    # Scores count only on a window that holds enough inputs, and only when they persist.
    for name, window in (
        ("EdgeInputDrift", "edge_agent_monitor_window_inputs >= 500"),
        ("EdgeLowConfidence", "edge_agent_monitor_window_inputs >= 500"),
        ("EdgeOnlineAccuracyLow", "edgeinfer_online_window_results >= 200"),
    ):
        assert window in rules[name]["expr"] and rules[name]["for"], name
    drift = " ".join(rules["EdgeInputDrift"]["expr"].split())
    assert "edge_agent_input_drift_score" in drift and drift.endswith("> 0.1")
    assert "edgeinfer_online_accuracy < 0.8" in rules["EdgeOnlineAccuracyLow"]["expr"]
    # One drift alert: no second rule on the drift score.
    assert [n for n, r in rules.items() if "input_drift_score" in r["expr"]] == ["EdgeInputDrift"]


def test_scrape_job_name_matches_the_alerts() -> None:
    compose_prom = yaml.safe_load((DEPLOY / "prometheus/prometheus.yml").read_text())
    k8s_prom = yaml.safe_load((K8S / "prometheus-kubernetes-sd.yml").read_text())
    for config in (compose_prom, k8s_prom):
        jobs = {job["job_name"] for job in config["scrape_configs"]}
        assert "edgeinfer-agent" in jobs
    assert 'job="edgeinfer-agent"' in ALERTS.read_text()
    agent_job = next(
        j for j in compose_prom["scrape_configs"] if j["job_name"] == "edgeinfer-agent"
    )
    assert agent_job["dns_sd_configs"][0]["names"] == ["agent"]
    assert agent_job["dns_sd_configs"][0]["port"] == 9400
    # The monitor: scraped on the port its Compose service listens on.
    monitor_job = next(
        j for j in compose_prom["scrape_configs"] if j["job_name"] == "edgeinfer-monitor"
    )
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    command = compose["services"]["monitor"]["command"]
    port = command[command.index("--metrics-port") + 1]
    assert monitor_job["static_configs"][0]["targets"] == [f"monitor:{port}"]
    assert compose["services"]["monitor"]["environment"]["EDGE_METRICS_PORT"] == int(port)
    assert "--feedback" in compose["services"]["replayer"]["command"]


# ----------------------------------------------------------------- EDGE_* variables


def _compose_env_names() -> dict[str, set[str]]:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    return {
        name: {k for k in service.get("environment", {}) if k.startswith("EDGE_")}
        for name, service in compose["services"].items()
    }


def test_known_variables_include_kafka_and_agent_settings() -> None:
    known = known_edge_variables()
    assert {"EDGE_BOOTSTRAP_SERVERS", "EDGE_SASL_PASSWORD", "EDGE_MODEL", "EDGE_GROUP"} <= known
    assert "EDGE_INPUT" not in known  # the flag is --input, the variable EDGE_INPUT_TOPIC


def test_every_edge_variable_a_deployment_sets_is_a_real_setting() -> None:
    known = known_edge_variables()
    sources: dict[str, set[str]] = {
        f"compose:{svc}": names for svc, names in _compose_env_names().items()
    }
    for (kind, name), obj in load_k8s().items():
        if kind in ("ConfigMap", "Secret"):
            data = {**obj.get("data", {}), **obj.get("stringData", {})}
            sources[f"k8s:{name}"] = {k for k in data if k.startswith("EDGE_")}
        if kind in ("Deployment", "Job"):
            for c in obj["spec"]["template"]["spec"]["containers"]:
                sources[f"k8s:{name}"] = {
                    e["name"] for e in c.get("env", []) if e["name"].startswith("EDGE_")
                }
    env_file = set(re.findall(r"^#?(EDGE_\w+)=", AGENT_ENV.read_text(), flags=re.M))
    sources["systemd:agent.env.example"] = env_file
    sources["systemd:unit"] = set(re.findall(r"\b(EDGE_\w+)=", UNIT.read_text()))
    assert sum(len(v) for v in sources.values()) > 40
    for where, names in sources.items():
        assert names <= known, f"{where}: unknown variable(s) {sorted(names - known)}"


def test_compose_agents_and_k8s_agents_have_exactly_one_model_source() -> None:
    sources = {"EDGE_BUNDLE", "EDGE_REGISTRY", "EDGE_MODELS_TOPIC"}
    assert len(_compose_env_names()["agent"] & sources) == 1
    agent_cm = load_k8s()[("ConfigMap", "edgeinfer-agent")]["data"]
    assert len(set(agent_cm) & sources) == 1
    active = set(re.findall(r"^(EDGE_\w+)=", AGENT_ENV.read_text(), flags=re.M))
    assert len(active & sources) == 1
    assert "EDGE_REGISTRY" not in UNIT.read_text()  # the env file picks the source


def test_compose_trainer_and_agent_agree_on_the_model_name() -> None:
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    script = compose["services"]["trainer"]["command"][0]
    assert '--name "${MODEL_NAME:-basic-motions}"' in script
    assert compose["services"]["agent"]["environment"]["EDGE_MODEL"] == (
        "${MODEL_NAME:-basic-motions}"
    )


# ----------------------------------------------------------------- Kubernetes


def test_k8s_manifests_parse_and_kustomization_lists_them() -> None:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    examples = {p for p in on_disk if ".example." in p}
    assert listed == on_disk - examples
    assert kustomization["namespace"] == "edgeinfer"
    objects = load_k8s()
    assert ("Namespace", "edgeinfer") in objects
    assert ("PersistentVolumeClaim", "edgeinfer-registry") in objects


def _agent() -> dict[str, Any]:
    return load_k8s()[("Deployment", "edgeinfer-agent")]


def test_agent_deployment_probes_resources_and_security() -> None:
    dep = _agent()
    spec = dep["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert ports == {"metrics": 9400}
    assert container["livenessProbe"]["httpGet"] == {"path": "/healthz", "port": "metrics"}
    assert container["readinessProbe"]["httpGet"] == {"path": "/readyz", "port": "metrics"}
    assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
    res = container["resources"]
    assert {"cpu", "memory"} <= set(res["requests"]) and {"cpu", "memory"} <= set(res["limits"])
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] != 0
    annotations = dep["spec"]["template"]["metadata"]["annotations"]
    assert annotations == {
        "prometheus.io/scrape": "true",
        "prometheus.io/port": "9400",
        "prometheus.io/path": "/metrics",
    }
    # Writable paths the read-only root filesystem needs are volumes.
    mounts = {m["mountPath"] for m in container["volumeMounts"]}
    state_dir = load_k8s()[("ConfigMap", "edgeinfer-agent")]["data"]["EDGE_STATE_DIR"]
    assert state_dir in mounts and "/tmp" in mounts


def test_agent_replicas_equal_partitions_and_labels_match() -> None:
    objects = load_k8s()
    dep = objects[("Deployment", "edgeinfer-agent")]
    partitions = int(objects[("ConfigMap", "edgeinfer-trainer")]["data"]["PARTITIONS"])
    assert dep["spec"]["replicas"] == partitions
    selector = dep["spec"]["selector"]["matchLabels"]
    labels = dep["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()
    svc = objects[("Service", "edgeinfer-agent-metrics")]
    assert svc["spec"]["selector"].items() <= labels.items()
    assert svc["spec"]["ports"][0]["targetPort"] == "metrics"
    pdb = objects[("PodDisruptionBudget", "edgeinfer-agent")]
    assert pdb["spec"]["selector"]["matchLabels"].items() <= labels.items()


def test_k8s_references_resolve() -> None:
    objects = load_k8s()
    for (kind, name), obj in objects.items():
        if kind not in ("Deployment", "Job"):
            continue
        spec = obj["spec"]["template"]["spec"]
        for container in spec["containers"]:
            for source in container.get("envFrom", []):
                if "configMapRef" in source:
                    assert ("ConfigMap", source["configMapRef"]["name"]) in objects, name
                if "secretRef" in source:  # Secrets are the user's: must be optional
                    assert source["secretRef"]["optional"] is True, name
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("configMapKeyRef")
                if ref:
                    cm = objects[("ConfigMap", ref["name"])]
                    assert ref["key"] in cm["data"], f"{name}: {ref}"
            names = {v["name"] for v in spec.get("volumes", [])}
            assert {m["name"] for m in container.get("volumeMounts", [])} <= names, name
        for volume in spec.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                claim = volume["persistentVolumeClaim"]["claimName"]
                assert ("PersistentVolumeClaim", claim) in objects
            if "secret" in volume:
                assert volume["secret"]["optional"] is True, name


def test_k8s_monitor_is_one_pod_scraped_on_its_port() -> None:
    dep = load_k8s()[("Deployment", "edgeinfer-monitor")]
    spec = dep["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"  # never two
    (container,) = spec["template"]["spec"]["containers"]
    args = container["args"]
    port = int(args[args.index("--metrics-port") + 1])
    assert args[0] == "monitor" and container["ports"][0]["containerPort"] == port
    assert spec["template"]["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    k8s_prom = yaml.safe_load((K8S / "prometheus-kubernetes-sd.yml").read_text())
    job = next(j for j in k8s_prom["scrape_configs"] if j["job_name"] == "edgeinfer-monitor")
    assert job["relabel_configs"][0]["regex"] == "edgeinfer-monitor"


def test_trainer_job_requests_a_gpu_and_publishes() -> None:
    job = load_k8s()[("Job", "edgeinfer-trainer")]
    (container,) = job["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1
    script = container["args"][0]
    assert "edgeinfer train" in script and "edgeinfer publish" in script
    assert "--topic models" in script
    comments = " ".join(
        line.lstrip("# ") for line in (K8S / "trainer-job.yaml").read_text().splitlines()
    )
    assert "it trains on CPU" in comments


# ----------------------------------------------------------------- systemd


def test_systemd_unit_is_sandboxed_and_restarts() -> None:
    d = unit_directives()
    expect = {
        "Service.Restart": ["on-failure"],
        "Service.NoNewPrivileges": ["yes"],
        "Service.ProtectSystem": ["strict"],
        "Service.ProtectHome": ["yes"],
        "Service.PrivateTmp": ["yes"],
        "Service.EnvironmentFile": ["/etc/edgeinfer/agent.env"],
        "Service.ReadWritePaths": ["/var/lib/edgeinfer"],
        "Service.StateDirectory": ["edgeinfer"],
    }
    for key, value in expect.items():
        assert d.get(key) == value, key
    for key in ("Service.RestartSec", "Unit.StartLimitIntervalSec", "Unit.StartLimitBurst"):
        assert key in d, key
    assert d["Service.MemoryMax"][0].endswith(("M", "G"))
    assert d["Service.User"] == ["edgeinfer"] or d.get("Service.DynamicUser") == ["yes"]
    (exec_start,) = d["Service.ExecStart"]
    assert exec_start.startswith("/opt/edgeinfer/.venv/bin/edgeinfer agent")
    # The state directory the env file points at is writable.
    env = dict(re.findall(r"^(EDGE_\w+)=(.*)$", AGENT_ENV.read_text(), flags=re.M))
    assert env["EDGE_REGISTRY"].startswith("/var/lib/edgeinfer/")


# ----------------------------------------------------------------- containers


def _dockerignore_excludes(path: str) -> bool:
    """Docker's rule: the last matching pattern wins; ``!`` re-includes."""
    excluded = False
    for raw in (ROOT / ".dockerignore").read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        parts = path.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        candidates = [pattern, pattern.replace("**/", "")]
        if any(fnmatch.fnmatch(p, c) for p in prefixes for c in candidates):
            excluded = not negate
    return excluded


def _dockerfile(name: str) -> str:
    return (DEPLOY / "docker" / name).read_text()


@pytest.mark.parametrize("name", ["agent.Dockerfile", "trainer.Dockerfile"])
def test_dockerfile_copies_exist_and_are_in_the_build_context(name: str) -> None:
    copies = re.findall(r"^COPY (?!--from)(.+) \S+$", _dockerfile(name), flags=re.M)
    assert copies
    for line in copies:
        for src in line.split():
            assert (ROOT / src).exists(), f"{name}: COPY {src} does not exist"
            assert not _dockerignore_excludes(src), f"{name}: .dockerignore excludes {src}"
    assert _dockerignore_excludes(".venv") and _dockerignore_excludes(".git")
    assert _dockerignore_excludes("deploy/tls/ca.pem")


def test_agent_dockerfile_is_slim_non_root_and_healthchecked() -> None:
    text = _dockerfile("agent.Dockerfile")
    assert "ARG PYTHON_IMAGE=python:3.11-slim" in text
    assert "ARG EXTRAS=agent\n" in text and 'pip install ".[${EXTRAS}]"' in text
    assert "tensorflow must not be in the agent image" in text
    users = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")
    assert re.search(r"^EXPOSE 9400$", text, flags=re.M)
    assert re.search(r"^HEALTHCHECK .*\n.*/healthz", text, flags=re.M)
    assert "COPY deploy/docker/healthcheck.py /usr/local/bin/edgeinfer-healthcheck" in text


def test_trainer_dockerfile_is_gpu_capable() -> None:
    text = _dockerfile("trainer.Dockerfile")
    assert 'pip install ".[trainer]" "tensorflow[${TENSORFLOW_EXTRA}]"' in text
    assert "ARG TENSORFLOW_EXTRA=and-cuda" in text
    assert "NVIDIA_VISIBLE_DEVICES=all" in text
    users = re.findall(r"^USER (\S+)", text, flags=re.M)
    assert users and users[-1].split(":")[0] not in ("root", "0")


# ----------------------------------------------------------------- model signing


def test_every_deployment_ships_a_public_key_and_no_agent_the_private_one() -> None:
    """Agents refuse unsigned bundles: compose, Kubernetes and systemd give them a key
    folder (EDGE_PUBLIC_KEY), never --allow-unsigned; only the trainer sees the private key."""
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    agent = compose["services"]["agent"]
    assert "EDGE_ALLOW_UNSIGNED" not in agent["environment"]
    key_dir = agent["environment"]["EDGE_PUBLIC_KEY"]
    assert f"model-keys:{key_dir}:ro" in agent["volumes"]
    assert not any("signing-key" in v for v in agent["volumes"])
    trainer = compose["services"]["trainer"]
    assert "signing-key:/var/lib/edgeinfer/signing:ro" in trainer["volumes"]
    assert "--key /var/lib/edgeinfer/signing/edgeinfer.key" in trainer["command"][0]

    objects = load_k8s()
    cm = objects[("ConfigMap", "edgeinfer-agent")]["data"]
    assert "EDGE_ALLOW_UNSIGNED" not in cm
    spec = objects[("Deployment", "edgeinfer-agent")]["spec"]["template"]["spec"]
    (container,) = spec["containers"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in spec["volumes"]}
    key_volume = volumes[mounts[cm["EDGE_PUBLIC_KEY"]]]
    assert key_volume["secret"]["secretName"] == "edgeinfer-model-keys"
    assert not any(
        v.get("secret", {}).get("secretName") == "edgeinfer-model-signing-key"
        for v in spec["volumes"]
    )
    job = objects[("Job", "edgeinfer-trainer")]["spec"]["template"]["spec"]
    (trainer_container,) = job["containers"]
    assert "--key /etc/edgeinfer/signing/edgeinfer.key" in trainer_container["args"][0]
    secrets = {v["secret"]["secretName"] for v in job["volumes"] if "secret" in v}
    assert {"edgeinfer-model-signing-key", "edgeinfer-model-keys"} <= secrets
    examples = {name for (kind, name) in objects if kind == "Secret"}
    assert {"edgeinfer-model-keys", "edgeinfer-model-signing-key"} <= examples

    env = dict(re.findall(r"^(EDGE_\w+)=(.*)$", AGENT_ENV.read_text(), flags=re.M))
    assert env["EDGE_PUBLIC_KEY"] == "/etc/edgeinfer/keys" and "EDGE_ALLOW_UNSIGNED" not in env
    assert "EDGE_PUBLIC_KEY=/etc/edgeinfer/keys" in unit_directives()["Service.Environment"]
