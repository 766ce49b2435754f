"""Test-load a model in a child process before the agent loads it.

A corrupt or hostile ``.tflite`` that still passes LiteRT's flatbuffer verifier can crash
the interpreter with a segfault (seen here: an operator whose required input index is -1).
In-process, that would kill the agent; in a child it is a refusal with a clear reason.

The parent sends the model bytes on stdin (so the child tests exactly the bytes the agent
verified and will load) and reads one JSON line back. The child imports numpy and LiteRT
only, never TensorFlow: ``python -m edge_agent.probe - [--threads N] [--no-default-delegates]``
or ``python -m edge_agent.probe BUNDLE_DIR``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import subprocess
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

DEFAULT_TIMEOUT_S = 60.0
#: Samples per batch the child runs after the load-time invoke.
_PROBE_BATCH = 3


@dataclass(frozen=True)
class ProbeResult:
    """What the child process found: ``ok`` or an ``error`` text naming the cause."""

    ok: bool
    error: str = ""
    details: dict[str, Any] = field(default_factory=dict)
    returncode: int = 0


def _signal_name(number: int) -> str:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"


def _child_env() -> dict[str, str]:
    env = dict(os.environ)
    root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (root, env.get("PYTHONPATH")) if p)
    # The child's log lines would only clutter the agent's stderr.
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return env


def probe_model(
    model: bytes,
    *,
    what: str,
    num_threads: int = 1,
    use_default_delegates: bool = True,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> ProbeResult:
    """Load and invoke ``model`` in a child Python process; never raises for a bad model."""
    cmd = [sys.executable, "-m", "edge_agent.probe", "-", "--threads", str(num_threads)]
    if not use_default_delegates:
        cmd.append("--no-default-delegates")
    try:
        proc = subprocess.run(
            cmd,
            input=model,
            capture_output=True,
            timeout=timeout_s,
            env=_child_env(),
            check=False,
        )
    except subprocess.TimeoutExpired:
        return ProbeResult(
            ok=False,
            error=f"test load of {what} did not finish within {timeout_s:g} s: refused",
            returncode=-int(signal.SIGKILL),
        )
    except OSError as exc:
        return ProbeResult(ok=False, error=f"cannot start the test-load process: {exc}")
    stderr = proc.stderr.decode(errors="replace").strip()
    if proc.returncode < 0:
        number = -proc.returncode
        return ProbeResult(
            ok=False,
            error=(
                f"LiteRT crashed (signal {number}, {_signal_name(number)}) loading {what} in "
                "the test-load process: the model file is corrupt; refused"
            ),
            returncode=proc.returncode,
        )
    report = _last_json_line(proc.stdout.decode(errors="replace"))
    if report is None:
        tail = stderr.splitlines()[-3:] if stderr else []
        return ProbeResult(
            ok=False,
            error=(
                f"test load of {what} exited with code {proc.returncode} without a report: "
                f"{' | '.join(tail) or 'no output'}"
            ),
            returncode=proc.returncode,
        )
    if not report.get("ok"):
        return ProbeResult(
            ok=False,
            error=str(report.get("error", "unknown error")),
            details=report,
            returncode=proc.returncode,
        )
    return ProbeResult(ok=True, details=report, returncode=proc.returncode)


def probe_bundle(
    bundle_dir: Path,
    *,
    num_threads: int = 1,
    use_default_delegates: bool = True,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> ProbeResult:
    """:func:`probe_model` on ``bundle_dir/model.tflite`` (the bundle is not verified here)."""
    from stream.bundle import MODEL_FILE

    path = Path(bundle_dir) / MODEL_FILE
    try:
        model = path.read_bytes()
    except OSError as exc:
        return ProbeResult(ok=False, error=f"cannot read {path}: {exc}")
    return probe_model(
        model,
        what=str(path),
        num_threads=num_threads,
        use_default_delegates=use_default_delegates,
        timeout_s=timeout_s,
    )


def _last_json_line(text: str) -> dict[str, Any] | None:
    for line in reversed(text.splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                data = json.loads(line)
            except ValueError:
                continue
            if isinstance(data, dict):
                return data
    return None


# ------------------------------------------------------------------------ child


def _child(model: bytes, *, num_threads: int, use_default_delegates: bool) -> dict[str, Any]:
    import numpy as np

    from edge_agent.exceptions import AgentError
    from edge_agent.runtime import load_runtime

    try:
        runtime = load_runtime(
            model_content=model,
            num_threads=num_threads,
            use_default_delegates=use_default_delegates,
        )
        shape = [int(d) for d in runtime.input_spec.shape[1:] if d is not None]
        out = runtime.run(np.zeros((_PROBE_BATCH, *shape), dtype=np.float32))
        if out.shape[0] != _PROBE_BATCH or not np.all(np.isfinite(out)):
            msg = f"the model's output on zeros is {out.shape} with non-finite values"
            raise ValueError(msg)
    except (AgentError, ValueError, RuntimeError) as exc:
        return {"ok": False, "error": str(exc), "tensorflow_imported": "tensorflow" in sys.modules}
    return {
        "ok": True,
        "runtime": runtime.name,
        "batchable": runtime.batchable,
        "uses_default_delegates": runtime.uses_default_delegates,
        "input": asdict(runtime.input_spec),
        "output": asdict(runtime.output_spec),
        "tensorflow_imported": "tensorflow" in sys.modules,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m edge_agent.probe",
        description="Test-load a .tflite model (from stdin '-' or a bundle folder) and "
        "print one JSON line: {ok, error | runtime, batchable, ...}.",
    )
    parser.add_argument("source", help="'-' to read the model from stdin, or a bundle folder")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-default-delegates", action="store_true")
    args = parser.parse_args(argv)
    if args.source == "-":
        model = sys.stdin.buffer.read()
    else:
        from stream.bundle import MODEL_FILE

        path = Path(args.source)
        model = (path / MODEL_FILE if path.is_dir() else path).read_bytes()
    report = _child(
        model, num_threads=args.threads, use_default_delegates=not args.no_default_delegates
    )
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    return 0 if report["ok"] else 1


if __name__ == "__main__":
    logging.basicConfig(level=logging.WARNING)
    sys.exit(main())
