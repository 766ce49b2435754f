"""`edgeinfer demo --scenario drift` end to end: every part real (broker, agents, monitor,
Prometheus, trainer), the loop closes and its summary holds what the issue asks for.

Long (about 5-10 minutes on 2 cores: it trains two models): `make test-long`.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.long, pytest.mark.integration]


def test_drift_scenario_detects_retrains_promotes_and_recovers(tmp_path: Path) -> None:
    work = tmp_path / "demo-drift"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "stream",
            "demo",
            "--scenario",
            "drift",
            "--workdir",
            str(work),
            "--undrifted-s",
            "45",
            "--timeout",
            "1500",
        ],
        capture_output=True,
        text=True,
        timeout=1800,
        check=False,
    )
    log = (proc.stdout + proc.stderr)[-4000:]
    assert proc.returncode == 0, log
    summary = json.loads((work / "summary.json").read_text())
    for key in (
        "accuracy_before_drift",
        "accuracy_during_drift",
        "accuracy_after_promotion",
        "drift_detected_after_inputs",
        "false_drift_alarms",
        "samples_captured",
        "promoted_version",
    ):
        assert summary[key] is not None, (key, summary)
    assert summary["promoted_version"] == "2"
    assert summary["false_drift_alarms"] == 0
    assert "EdgeInputDrift" not in summary["alerts_fired"]["undrifted"]
    assert "EdgeInputDrift" in summary["alerts_fired"]["drifted"]
    # the drift hurts v1, and the candidate retrained from the field fixes it
    assert summary["accuracy_during_drift"] < summary["accuracy_before_drift"] - 0.03
    assert summary["accuracy_after_promotion"] > summary["accuracy_during_drift"] + 0.03
    assert summary["drift_detected_after_inputs"] > 0
    assert summary["samples_captured"] >= 300
    assert (work / "drift.png").stat().st_size > 10_000
