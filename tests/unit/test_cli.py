"""The ``edgeinfer`` command line: parser, errors, the broker command, keys/verify/publish."""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from stream.broker import free_port, port_is_free
from stream.cli import build_parser, main
from stream.kafka import wait_for_broker
from stream.settings import KafkaSettings
from tests.fixtures.bundle_factory import write_test_bundle

ROOT = Path(__file__).resolve().parents[2]
STREAM_COMMANDS = ("broker", "topics", "replay", "tail", "keys", "verify", "publish")


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("EDGE_")}


def _edgeinfer(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stream", *args],
        cwd=ROOT,
        env=_clean_env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_parser_builds_with_every_stream_command() -> None:
    parser = build_parser()
    args = parser.parse_args(["replay", "sensors", "--dataset", "basic-motions", "--rate", "0"])
    assert args.handler == "stream.replay:run_replay"
    assert (args.kind, args.dataset, args.rate, args.split) == (
        "sensors",
        "basic-motions",
        0,
        "test",
    )
    args = parser.parse_args(["tail", "sensors", "--max", "10"])
    assert (args.handler, args.topic, args.max) == ("stream.tail:run_tail", "sensors", 10)
    args = parser.parse_args(["topics", "ensure", "--topic", "a", "--topic", "b"])
    assert (args.topic, args.partitions) == (["a", "b"], 4)


def test_help_lists_the_subcommands() -> None:
    proc = _edgeinfer("--help")
    assert proc.returncode == 0
    for command in STREAM_COMMANDS:
        assert f"\n    {command} " in proc.stdout, command


def test_bad_bootstrap_is_one_line_naming_the_setting() -> None:
    proc = _edgeinfer("topics", "list", "--bootstrap-servers", "no-port-here")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith("error: bootstrap_servers entry 'no-port-here' is not host:port")
    assert "--bootstrap-servers" in lines[0]


def test_unreachable_broker_is_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("EDGE_REQUEST_TIMEOUT_MS", "1500")  # also bounds the bootstrap wait
    port = free_port()
    code = main(["tail", "sensors", "--bootstrap-servers", f"127.0.0.1:{port}", "--max", "1"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert err[-1].startswith("error: cannot create a Kafka consumer: no broker answered at ")
    assert "edgeinfer broker" in err[-1]


@pytest.mark.parametrize("rate", ["-1", "fast"])
def test_bad_rate_is_refused_by_the_parser(rate: str) -> None:
    proc = _edgeinfer("replay", "sensors", "--rate", rate)
    assert proc.returncode == 2
    assert "--rate" in proc.stderr


def test_broker_command_prints_bootstrap_and_stops_on_sigterm() -> None:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "stream", "broker", "--port", str(port)],
        cwd=ROOT,
        env=_clean_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        first = proc.stdout.readline().strip()
        assert first == f"broker ready on 127.0.0.1:{port}"
        wait_for_broker(KafkaSettings(bootstrap_servers=f"127.0.0.1:{port}"), timeout_s=10)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "broker stopped" in out
    deadline = time.monotonic() + 5
    while not port_is_free("127.0.0.1", port) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert port_is_free("127.0.0.1", port)  # the Tansu child is gone too


def test_broker_command_on_a_taken_port(capsys: pytest.CaptureFixture[str]) -> None:
    import socket

    with socket.create_server(("127.0.0.1", 0)) as sock:
        port = sock.getsockname()[1]
        code = main(["broker", "--port", str(port)])
    err = capsys.readouterr().err
    assert code == 2
    assert f"error: port {port} on 127.0.0.1 is already in use" in err


def test_keys_generate_and_verify(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from stream.bundle import load_private_key

    assert main(["keys", "generate", "--out", str(tmp_path / "keys")]) == 0
    private, public = tmp_path / "keys" / "edgeinfer.key", tmp_path / "keys" / "edgeinfer.pub"
    assert private.stat().st_mode & 0o777 == 0o600
    assert main(["keys", "generate", "--out", str(tmp_path / "keys")]) == 2
    assert "pass --force" in capsys.readouterr().err

    signed = write_test_bundle(tmp_path / "signed", private_key=load_private_key(private))
    assert main(["verify", str(signed.path), "--key", str(public)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("OK motion 1 int8 sha256=")
    assert "signature OK" in out

    unsigned = write_test_bundle(tmp_path / "unsigned")
    assert main(["verify", str(unsigned.path)]) == 0
    assert "unsigned" in capsys.readouterr().out
    assert main(["verify", str(unsigned.path), "--key", str(public)]) == 1
    assert "FAILED: bundle" in capsys.readouterr().out

    (signed.path / "model.tflite").write_bytes(b"tampered")
    assert main(["verify", str(signed.path), "--key", str(public)]) == 1
    assert "does not match the manifest" in capsys.readouterr().out


def test_publish_without_topic_copies_into_the_registry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bundle = write_test_bundle(tmp_path / "b", version="20240101")
    registry = tmp_path / "reg"
    code = main(["publish", str(bundle.path), "--registry", str(registry), "--no-topic"])
    assert code == 0
    assert (registry / "motion" / "20240101" / "model.tflite").read_bytes() == bundle.model_bytes()
    assert f"registry: {registry / 'motion' / '20240101'}" in capsys.readouterr().out


def test_the_command_table_matches_what_each_package_declares() -> None:
    """``edgeinfer CMD`` registers only COMMANDS[CMD]: the table must name every command
    its registrar declares, and no other."""
    import argparse
    import importlib

    from stream.cli import _REGISTRARS, COMMANDS

    for spec in _REGISTRARS:
        module_name, _, func = spec.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError:
            continue  # a package not installed here
        sub = argparse.ArgumentParser().add_subparsers()
        getattr(module, func)(sub)
        declared = set(sub.choices)
        listed = {cmd for cmd, owner in COMMANDS.items() if owner == spec}
        assert declared == listed, spec


@pytest.mark.parametrize(
    ("argv", "command"),
    [
        (["agent", "--bundle", "x"], "agent"),
        (["--log-level", "DEBUG", "agent"], "agent"),
        (["--log-level=DEBUG", "rollback", "--model", "m"], "rollback"),
        (["--help"], None),
        ([], None),
    ],
)
def test_the_command_is_the_first_word_that_is_not_an_option(
    argv: list[str], command: str | None
) -> None:
    from stream.cli import command_of

    assert command_of(argv) == command


def test_the_agent_command_registers_only_the_agents_arguments() -> None:
    code = (
        "import sys; from stream.cli import build_parser; "
        "a = build_parser(['agent']).parse_args(['agent', '--bundle', 'b']); "
        "print(a.handler, sorted({m.split('.')[0] for m in sys.modules} "
        "& {'trainer', 'fleet', 'bench', 'numpy', 'cryptography'}))"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["edge_agent.agent:run_agent", "[]"]
    # An unknown command still gets the full list in the error.
    proc = _edgeinfer("no-such-command")
    assert proc.returncode == 2
    assert "invalid choice: 'no-such-command'" in proc.stderr
    assert "'agent'" in proc.stderr and "'broker'" in proc.stderr


def test_every_handler_follows_the_naming_rule_and_resolves() -> None:
    """One rule for CLI handlers (docs/architecture.md): ``package.module:run_<command>``
    (``run_<command>_<action>`` for a nested one), a function of that module."""
    import importlib
    import re

    from stream.cli import build_parser

    def handlers(parser: argparse.ArgumentParser) -> list[str]:
        found: list[str] = []
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub in action.choices.values():
                    handler = sub.get_default("handler")
                    if handler:
                        found.append(handler)
                    found += handlers(sub)
        return found

    found = handlers(build_parser())
    assert len(found) >= 12
    for handler in found:
        assert re.fullmatch(r"[a-z_.]+:run_[a-z_]+", handler), handler
        module, _, func = handler.partition(":")
        if module.startswith("trainer"):
            continue  # imports TensorFlow: resolved by the trainer's own command tests
        assert callable(getattr(importlib.import_module(module), func)), handler
