"""Run a converted model through LiteRT, exactly as the agent will: predictions, latency, ops.

This module imports numpy and ai-edge-litert only (no TensorFlow), so it starts in a fraction
of a second as a child process: :func:`evaluate_isolated` runs each variant in its own
``python -m trainer.evaluate`` so that a crash inside LiteRT (a segfault in a kernel or a
delegate) cannot kill the trainer. A model that fails its first ``invoke()`` under the
default delegates (XNNPACK) is retried without them, and the fallback is recorded.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from stream.preprocessing import dequantize, quantize
from trainer.exceptions import EvaluationError

logger = logging.getLogger(__name__)

#: Batch used to compute predictions over the test split (the batch dim is resized).
PREDICT_BATCH = 64
LATENCY_RUNS = 300
LATENCY_BUDGET_S = 3.0
WARMUP_RUNS = 10


# --------------------------------------------------------------------- metrics (numpy)


def accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(np.mean(np.asarray(y_true) == np.asarray(y_pred))) if len(y_true) else 0.0


def confusion_matrix(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> np.ndarray:
    cm = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(cm, (np.asarray(y_true, dtype=np.int64), np.asarray(y_pred, dtype=np.int64)), 1)
    return cm


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray, num_classes: int) -> float:
    """F1 averaged over the classes present in ``y_true`` or ``y_pred`` (as scikit-learn)."""
    cm = confusion_matrix(y_true, y_pred, num_classes)
    tp = np.diag(cm).astype(np.float64)
    support = cm.sum(axis=1)
    predicted = cm.sum(axis=0)
    present = (support + predicted) > 0
    denom = support + predicted
    f1 = np.divide(2 * tp, denom, out=np.zeros_like(tp), where=denom > 0)
    return float(f1[present].mean()) if present.any() else 0.0


def percentile_ms(durations_ns: list[int], q: float) -> float:
    return float(np.percentile(np.asarray(durations_ns, dtype=np.float64), q) / 1e6)


# ----------------------------------------------------------------------------- LiteRT


def _interpreter(model: bytes, *, default_delegates: bool, threads: int = 1) -> Any:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    resolver = (
        OpResolverType.AUTO
        if default_delegates
        else (OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    )
    return Interpreter(
        model_content=model, num_threads=threads, experimental_op_resolver_type=resolver
    )


def tensor_spec(detail: dict[str, Any]) -> dict[str, Any]:
    """A bundle TensorSpec dict from an interpreter tensor detail (batch dimension None)."""
    signature = list(detail.get("shape_signature", detail["shape"]))
    shape: list[int | None] = [None] + [int(d) for d in signature[1:]]
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return {
        "shape": shape,
        "dtype": np.dtype(detail["dtype"]).name,
        "scale": float(scale),
        "zero_point": int(zero_point),
    }


def op_names(model: bytes) -> list[str]:
    """The builtin ops of the model's graph (read without delegates, which hide them)."""
    interp = _interpreter(model, default_delegates=False)
    return sorted({str(op["op_name"]) for op in interp._get_ops_details()})


class _Runner:
    """One interpreter; feeds float inputs (quantizing for int8) and returns float outputs."""

    def __init__(self, model: bytes, *, default_delegates: bool) -> None:
        self.interp = _interpreter(model, default_delegates=default_delegates)
        self.interp.allocate_tensors()
        self._refresh()

    def _refresh(self) -> None:
        self.inp = self.interp.get_input_details()[0]
        self.out = self.interp.get_output_details()[0]

    def resize(self, batch: int) -> None:
        shape = [batch, *[int(d) for d in self.inp["shape"][1:]]]
        self.interp.resize_tensor_input(self.inp["index"], shape)
        self.interp.allocate_tensors()
        self._refresh()

    def prepare(self, x: np.ndarray) -> np.ndarray:
        dtype = np.dtype(self.inp["dtype"])
        if dtype == np.float32:
            return np.ascontiguousarray(x, dtype=np.float32)
        scale, zero_point = self.inp["quantization"]
        return quantize(x, scale, zero_point, dtype.name)

    def run(self, prepared: np.ndarray) -> np.ndarray:
        self.interp.set_tensor(self.inp["index"], prepared)
        self.interp.invoke()
        raw = self.interp.get_tensor(self.out["index"]).copy()
        if np.dtype(self.out["dtype"]) == np.float32:
            return raw
        scale, zero_point = self.out["quantization"]
        return dequantize(raw, scale, zero_point)


def _first_invoke(model: bytes, x: np.ndarray, *, default_delegates: bool) -> _Runner:
    runner = _Runner(model, default_delegates=default_delegates)
    runner.run(runner.prepare(x[:1]))
    return runner


def run_litert(
    model: bytes,
    x: np.ndarray,
    *,
    default_delegates: bool | None = None,
    latency_budget_s: float = LATENCY_BUDGET_S,
) -> dict[str, Any]:
    """Test-invoke, predict every sample of ``x`` and time single inferences (1 thread).

    ``default_delegates=None`` tries the default delegates first and falls back to none
    when the first invoke fails. Returns a JSON-able dict.
    """
    fallback_reason = None
    if default_delegates is None:
        try:
            runner = _first_invoke(model, x, default_delegates=True)
            default_delegates = True
        except (RuntimeError, ValueError) as exc:
            fallback_reason = f"first invoke failed with the default delegates: {exc}"
            logger.warning('litert fallback reason="%s"', fallback_reason)
            default_delegates = False
            runner = _first_invoke(model, x, default_delegates=False)
    else:
        runner = _first_invoke(model, x, default_delegates=default_delegates)
    input_spec = tensor_spec(runner.inp)
    output_spec = tensor_spec(runner.out)

    probabilities, resizable = _predict(model, runner, x, default_delegates=default_delegates)

    single = _Runner(model, default_delegates=default_delegates)
    prepared = [single.prepare(x[i : i + 1]) for i in range(min(len(x), 64))]
    for i in range(WARMUP_RUNS):
        single.run(prepared[i % len(prepared)])
    durations: list[int] = []
    deadline = time.perf_counter() + latency_budget_s
    while len(durations) < LATENCY_RUNS and (len(durations) < 20 or time.perf_counter() < deadline):
        sample = prepared[len(durations) % len(prepared)]
        start = time.perf_counter_ns()
        single.run(sample)
        durations.append(time.perf_counter_ns() - start)
    return {
        "input": input_spec,
        "output": output_spec,
        "probabilities": probabilities.tolist(),
        "ops": op_names(model),
        "latency_ms": {"p50": percentile_ms(durations, 50), "p99": percentile_ms(durations, 99)},
        "latency_runs": len(durations),
        "use_default_delegates": bool(default_delegates),
        "fallback_reason": fallback_reason,
        "resizable_batch": resizable,
        "threads": 1,
    }


def _predict(
    model: bytes, runner: _Runner, x: np.ndarray, *, default_delegates: bool
) -> tuple[np.ndarray, bool]:
    outputs: list[np.ndarray] = []
    try:
        for start in range(0, len(x), PREDICT_BATCH):
            chunk = x[start : start + PREDICT_BATCH]
            if runner.inp["shape"][0] != len(chunk):
                runner.resize(len(chunk))
            outputs.append(runner.run(runner.prepare(chunk)))
        return np.concatenate(outputs).astype(np.float32), True
    except (RuntimeError, ValueError) as exc:
        logger.warning('litert batch resize failed, predicting one by one reason="%s"', exc)
    single = _Runner(model, default_delegates=default_delegates)
    rows = [single.run(single.prepare(x[i : i + 1]))[0] for i in range(len(x))]
    return np.stack(rows).astype(np.float32), False


# --------------------------------------------------------------- isolated (child process)


def evaluate_isolated(
    model_path: Path,
    x: np.ndarray,
    *,
    timeout_s: float = 900,
    latency_budget_s: float = LATENCY_BUDGET_S,
) -> dict[str, Any]:
    """:func:`run_litert` in a child process, so a LiteRT crash cannot kill the caller.

    A child killed by a signal under the default delegates is retried without them, and the
    fallback is recorded. Raises :class:`EvaluationError` if the model cannot run at all.
    """
    with tempfile.TemporaryDirectory(prefix="edgeinfer-eval-") as tmp:
        data = Path(tmp) / "x.npy"
        np.save(data, np.asarray(x, dtype=np.float32))
        out = Path(tmp) / "result.json"
        opts = {"timeout_s": timeout_s, "budget_s": latency_budget_s}
        result, failure = _child(model_path, data, out, delegates="auto", **opts)
        if result is None:
            logger.warning('litert child failed, retrying without delegates reason="%s"', failure)
            result, second = _child(model_path, data, out, delegates="none", **opts)
            if result is None:
                msg = (
                    f"{model_path.name} does not run in LiteRT: with the default delegates "
                    f"{failure}; without them {second}"
                )
                raise EvaluationError(msg)
            result["fallback_reason"] = f"with the default delegates {failure}"
        return result


def _child(
    model_path: Path, data: Path, out: Path, *, delegates: str, timeout_s: float, budget_s: float
) -> tuple[dict[str, Any] | None, str]:
    cmd = [
        sys.executable, "-m", "trainer.evaluate",
        "--model", str(model_path), "--data", str(data), "--out", str(out),
        "--delegates", delegates, "--latency-budget", str(budget_s),
    ]  # fmt: skip
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return None, f"the evaluation did not finish within {timeout_s:.0f} s"
    if proc.returncode == 0 and out.exists():
        return json.loads(out.read_text()), ""
    if proc.returncode < 0:
        try:
            name = signal.Signals(-proc.returncode).name
        except ValueError:
            name = f"signal {-proc.returncode}"
        return None, f"LiteRT crashed the process ({name})"
    tail = (proc.stderr or "").strip().splitlines()[-1:] or ["no output"]
    return None, f"the evaluation failed (exit {proc.returncode}): {tail[0][:300]}"


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.evaluate")
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--delegates", choices=("auto", "default", "none"), default="auto")
    parser.add_argument("--latency-budget", type=float, default=LATENCY_BUDGET_S)
    args = parser.parse_args(argv)
    choice = {"auto": None, "default": True, "none": False}[args.delegates]
    x = np.load(args.data)
    result = run_litert(
        args.model.read_bytes(), x, default_delegates=choice, latency_budget_s=args.latency_budget
    )
    args.out.write_text(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(_main())
