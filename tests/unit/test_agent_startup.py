"""What the agent does before its model is loaded, for a short cold start: the heavy
imports come after the test load of a ``--bundle`` has started, and an unsigned bundle
never imports ``cryptography``. Import checks run in a fresh interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from edge_agent.agent import start_test_load
from edge_agent.config import AgentConfig
from edge_agent.probe import Prober
from tests.fixtures.bundle_factory import write_test_bundle

ROOT = Path(__file__).resolve().parents[2]
HEAVY = ("numpy", "kafka", "prometheus_client", "PIL", "cryptography", "ai_edge_litert")


def _imported_after(code: str) -> list[str]:
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    modules = json.loads(proc.stdout.strip().splitlines()[-1])
    return sorted({m.split(".")[0] for m in modules} & {*HEAVY, "trainer", "fleet", "bench"})


def test_the_agent_command_is_resolved_without_heavy_imports() -> None:
    code = (
        "from stream.cli import build_parser, _resolve\n"
        "args = build_parser(['agent']).parse_args(['agent', '--bundle', 'b'])\n"
        "_resolve(args.handler)\n"
    )
    assert _imported_after(code) == []


def test_an_unsigned_bundle_is_verified_without_cryptography(tmp_path: Path) -> None:
    bundle = write_test_bundle(tmp_path / "b")
    code = f"from stream.bundle import verify_bundle\nverify_bundle({str(bundle.path)!r})\n"
    assert "cryptography" not in _imported_after(code)


@pytest.fixture
def started(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    calls: list[dict[str, Any]] = []

    def record(self: Prober, model: bytes, **kwargs: Any) -> None:
        calls.append({"model": model, **kwargs})

    monkeypatch.setattr(Prober, "start", record)
    return calls


def test_the_bundle_test_load_starts_with_the_manifests_options(
    tmp_path: Path, started: list[dict[str, Any]]
) -> None:
    bundle = write_test_bundle(tmp_path / "b", model=b"model bytes")
    manifest = json.loads((bundle.path / "manifest.json").read_text())
    manifest["use_default_delegates"] = False
    (bundle.path / "manifest.json").write_text(json.dumps(manifest))
    start_test_load(AgentConfig(bundle=bundle.path, threads=2), Prober())
    assert started == [
        {
            "model": b"model bytes",
            "what": str(bundle.path / "model.tflite"),
            "num_threads": 2,
            "use_default_delegates": False,
        }
    ]


def test_nothing_starts_early_without_a_readable_bundle(
    tmp_path: Path, started: list[dict[str, Any]]
) -> None:
    start_test_load(AgentConfig(bundle=tmp_path / "missing"), Prober())
    start_test_load(AgentConfig(registry=tmp_path, model="m"), Prober())
    broken = write_test_bundle(tmp_path / "broken").path
    (broken / "manifest.json").write_text("{not json")
    start_test_load(AgentConfig(bundle=broken), Prober())
    assert started == []  # the model store reports these properly


def test_in_a_registry_the_version_the_store_will_pick_starts_early(
    tmp_path: Path, started: list[dict[str, Any]]
) -> None:
    root = tmp_path / "registry"
    for version in ("2", "10", "9"):
        write_test_bundle(root / "motion" / version, version=version, model=version.encode())
    config = AgentConfig(registry=root, model="motion")
    start_test_load(config, Prober())
    (root / "motion" / "pinned").write_text("9\n")
    start_test_load(config, Prober())
    start_test_load(AgentConfig(registry=root, model="motion", pin="2"), Prober())
    start_test_load(AgentConfig(registry=root, model="motion", pin="11"), Prober())
    start_test_load(AgentConfig(registry=root, model="other"), Prober())
    # newest (natural order), the registry's pin, --pin; nothing for a missing pin/model
    assert [call["model"] for call in started] == [b"10", b"9", b"2"]
