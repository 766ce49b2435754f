"""``edgeinfer rollback`` and the errors of ``edgeinfer agent`` (through the real CLI)."""

from __future__ import annotations

from pathlib import Path

import pytest

from stream.cli import main
from stream.registry import Registry
from tests.fixtures.bundle_factory import write_test_bundle


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    reg = Registry(tmp_path / "registry")
    for version in ("1", "2", "10"):
        bundle = write_test_bundle(tmp_path / f"b{version}", name="motion", version=version)
        reg.publish(bundle.path)
    return reg


def test_rollback_pins_the_version_before_the_served_one(
    registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    assert registry.current("motion") == "10"
    assert main(["rollback", "--registry", str(registry.root), "--model", "motion"]) == 0
    assert registry.pinned("motion") == "2"  # natural order: 2 < 10
    assert "pinned 2 (was 10)" in capsys.readouterr().out
    assert main(["rollback", "--registry", str(registry.root), "--model", "motion"]) == 0
    assert registry.pinned("motion") == "1"


def test_rollback_to_a_given_version(registry: Registry) -> None:
    args = ["rollback", "--registry", str(registry.root), "--model", "motion", "--to", "2"]
    assert main(args) == 0
    assert registry.pinned("motion") == "2"


def test_rollback_errors_name_the_fix(
    registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    registry.pin("motion", "1")
    assert main(["rollback", "--registry", str(registry.root), "--model", "motion"]) == 2
    assert "no previous one" in capsys.readouterr().err
    args = ["rollback", "--registry", str(registry.root), "--model", "motion", "--to", "7"]
    assert main(args) == 2
    assert "cannot pin motion to 7" in capsys.readouterr().err
    assert main(["rollback", "--registry", str(registry.root), "--model", "nope"]) == 2
    assert "no published versions" in capsys.readouterr().err


def test_agent_without_a_model_source_is_a_config_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("EDGE_BUNDLE", "EDGE_REGISTRY", "EDGE_MODELS_TOPIC"):
        monkeypatch.delenv(name, raising=False)
    assert main(["agent", "--metrics-port", "0"]) == 2
    assert "choose exactly one model source" in capsys.readouterr().err


def test_agent_with_a_missing_bundle_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = [
        "agent",
        "--bundle",
        str(tmp_path / "missing"),
        "--metrics-port",
        "0",
        "--metrics-host",
        "127.0.0.1",
        "--state-dir",
        str(tmp_path / "state"),
        "--model-wait-s",
        "1",
        "--allow-unsigned",  # the test is about the missing folder
    ]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "missing" in err


def test_agent_without_a_public_key_refuses_to_start(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("EDGE_PUBLIC_KEY", "EDGE_ALLOW_UNSIGNED"):
        monkeypatch.delenv(name, raising=False)
    bundle = write_test_bundle(tmp_path / "b")
    args = ["agent", "--bundle", str(bundle.path), "--metrics-port", "0"]
    args += ["--metrics-host", "127.0.0.1", "--state-dir", str(tmp_path / "state")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: no public key: the agent runs only bundles signed")
    assert "--public-key PATH (EDGE_PUBLIC_KEY" in err
    assert "--allow-unsigned (EDGE_ALLOW_UNSIGNED=1)" in err


def test_rollback_below_the_served_version_says_agents_need_the_trust_flag(
    registry: Registry, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["rollback", "--registry", str(registry.root), "--model", "motion"]) == 0
    out = capsys.readouterr().out
    assert "motion: pinned 2 (was 10)" in out
    assert "only when started with --trust-registry-pin" in out
    assert (
        main(["rollback", "--registry", str(registry.root), "--model", "motion", "--to", "10"]) == 0
    )
    assert "--trust-registry-pin" not in capsys.readouterr().out  # not a downgrade
