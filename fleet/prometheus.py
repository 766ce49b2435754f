"""A real Prometheus server run as a child process, with the project's alert rules.

``edgeinfer demo --scenario drift`` shows the alerts an operator would get, so it runs the
Prometheus server (Debian's ``prometheus`` package, installed by ``make system-deps``)
with ``deploy/prometheus/alerts.yml`` and asks it over its HTTP API: PromQL queries, ranges
and the alerts firing. Only the ``for:`` durations of named rules can be shortened for a
demo that lasts minutes, not hours; every expression is the shipped one.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleet.scrape import http_get
from stream.broker import die_with_parent, free_port
from stream.exceptions import EdgeInferError

ALERT_RULES = Path(__file__).resolve().parent.parent / "deploy" / "prometheus" / "alerts.yml"


@dataclass(frozen=True)
class ScrapeJob:
    """A Prometheus job: its name (the rules select on it) and ``host:port`` targets."""

    name: str
    targets: tuple[str, ...]


def rules_with_for(rules: Path, overrides: dict[str, str]) -> str:
    """The rules file's YAML with the ``for:`` of the alerts named in ``overrides``
    replaced (e.g. ``{"EdgeInputDrift": "10s"}``); every other field unchanged."""
    import yaml

    doc = yaml.safe_load(rules.read_text())
    seen = set()
    for group in doc.get("groups", []):
        for rule in group.get("rules", []):
            name = rule.get("alert")
            if name in overrides:
                rule["for"] = overrides[name]
                seen.add(name)
    missing = sorted(set(overrides) - seen)
    if missing:
        msg = f"{rules} has no alert named {', '.join(missing)}"
        raise EdgeInferError(msg)
    return str(yaml.safe_dump(doc, sort_keys=False))


@dataclass(eq=False)
class PrometheusServer:
    """Start with :meth:`start`, stop with :meth:`stop`; data and logs under ``workdir``."""

    workdir: Path
    jobs: list[ScrapeJob]
    rules_text: str | None = None
    interval_s: float = 1.0
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = field(default=None, init=False)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> None:
        binary = shutil.which("prometheus")
        if binary is None:
            msg = (
                "the Prometheus server is not installed: run `make system-deps` "
                "(the Debian package prometheus)"
            )
            raise EdgeInferError(msg)
        self.workdir.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(self.workdir / "tsdb", ignore_errors=True)
        config = self.workdir / "prometheus.yml"
        lines = [
            "global:",
            f"  scrape_interval: {self.interval_s:g}s",
            f"  evaluation_interval: {self.interval_s:g}s",
        ]
        if self.rules_text is not None:
            (self.workdir / "alerts.yml").write_text(self.rules_text)
            lines += ["rule_files:", "  - alerts.yml"]
        lines.append("scrape_configs:")
        for job in self.jobs:
            targets = ", ".join(f"'{t}'" for t in job.targets)
            lines += [
                f"  - job_name: {job.name}",
                f"    static_configs:\n      - targets: [{targets}]",
            ]
        config.write_text("\n".join(lines) + "\n")
        log = (self.workdir / "prometheus.log").open("wb")
        self.proc = subprocess.Popen(
            [
                binary,
                f"--config.file={config}",
                f"--storage.tsdb.path={self.workdir / 'tsdb'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--log.level=warn",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            preexec_fn=die_with_parent,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                msg = f"Prometheus exited with code {self.proc.returncode}; see {log.name}"
                raise EdgeInferError(msg)
            if http_get(f"{self.url}/-/ready", timeout=1)[0] == 200:
                return
            time.sleep(0.2)
        msg = f"Prometheus not ready within {timeout_s:.0f} s; see {log.name}"
        raise EdgeInferError(msg)

    def _api(self, path: str, params: dict[str, str]) -> Any:
        url = f"{self.url}/api/v1/{path}?{urllib.parse.urlencode(params)}"
        status, body = http_get(url, timeout=10)
        if status != 200:
            msg = f"Prometheus {path} {params} answered {status}: {body[:300]}"
            raise EdgeInferError(msg)
        data = json.loads(body)
        if data.get("status") != "success":
            msg = f"Prometheus {path} {params}: {data}"
            raise EdgeInferError(msg)
        return data["data"]

    def query(self, promql: str, at: float | None = None) -> list[dict[str, Any]]:
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        result: list[dict[str, Any]] = self._api("query", params)["result"]
        return result

    def scalar(self, promql: str, at: float | None = None) -> float | None:
        """The value of a one-series answer (the first series), None when empty."""
        result = self.query(promql, at)
        return float(result[0]["value"][1]) if result else None

    def query_range(
        self, promql: str, start: float, end: float, step_s: float
    ) -> list[dict[str, Any]]:
        params = {
            "query": promql,
            "start": f"{start:.3f}",
            "end": f"{end:.3f}",
            "step": f"{step_s:g}",
        }
        result: list[dict[str, Any]] = self._api("query_range", params)["result"]
        return result

    def firing(self, alertname: str) -> list[dict[str, Any]]:
        """The alerts named ``alertname`` in state firing."""
        alerts = self._api("alerts", {})["alerts"]
        return [
            a
            for a in alerts
            if a.get("labels", {}).get("alertname") == alertname and a.get("state") == "firing"
        ]

    def alert_names(self) -> set[str]:
        """The alerting rules Prometheus loaded."""
        groups = self._api("rules", {"type": "alert"})["groups"]
        return {r["name"] for g in groups for r in g.get("rules", [])}

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
