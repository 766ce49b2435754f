"""The test load itself, as the child process runs it: load, invoke, run a small batch.

It imports numpy and LiteRT only, never TensorFlow, and answers with one JSON line:
``python -m edge_agent.probe - [--threads N] [--no-default-delegates]`` (the model on
stdin) or ``python -m edge_agent.probe BUNDLE_DIR``. A forked child calls
:func:`run_test_load` directly (:mod:`edge_agent.probe.process`).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict
from pathlib import Path
from typing import Any

#: Samples per batch the child runs after the load-time invoke.
_PROBE_BATCH = 3


def run_test_load(model: bytes, *, num_threads: int, use_default_delegates: bool) -> dict[str, Any]:
    """Load and invoke ``model`` in this process; the report the parent reads.

    ``import_error`` in the report tells the parent that this interpreter could not import
    numpy or the runtime (it then retries with a normal interpreter).
    """
    try:
        import numpy as np

        from edge_agent.exceptions import AgentError
        from edge_agent.runtime import load_runtime
    except ImportError as exc:  # the parent retries with a normal interpreter
        return {"ok": False, "import_error": True, "error": f"{type(exc).__name__}: {exc}"}

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
    report = run_test_load(
        model, num_threads=args.threads, use_default_delegates=not args.no_default_delegates
    )
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
    return 0 if report["ok"] else 1
