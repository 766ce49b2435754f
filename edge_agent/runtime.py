"""The inference runtime: one small interface over the LiteRT interpreter.

:func:`load_runtime` picks the first interpreter that is available: ``ai_edge_litert``
(LiteRT), then ``tflite_runtime``. There is deliberately no ``tf.lite`` fallback: nothing
under ``edge_agent/`` imports TensorFlow (a device has none; DESIGN.md's ``tf.lite``
fallback is dropped, see docs/architecture.md). The model is test-invoked once at load;
a model whose first invoke fails under the default delegates (XNNPACK; seen with an int8
unrolled LSTM) is reloaded without them (``uses_default_delegates`` becomes False, a
warning is logged, the caller counts ``edge_agent_runtime_fallback_total``).

:meth:`Runtime.run` takes a float32 batch already preprocessed, quantizes it for integer
inputs, resizes the batch dimension only when the batch size changes (or loops over
samples when the model has a fixed batch dimension), dequantizes integer outputs and
returns a float32 copy: never a view into the interpreter's buffers.

Why one module of this size: one interface and its only implementation, the interpreter
discovery and the quantize/dequantize arithmetic it applies; the delegate fallback and
the batch-resize rules touch the same interpreter calls.
"""

from __future__ import annotations

import logging
import traceback
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from edge_agent.exceptions import AgentConfigError, ModelLoadError
from stream.bundle import Manifest, TensorSpec
from stream.exceptions import DecodeError

logger = logging.getLogger(__name__)

#: Batch size tried at load for models whose signature fixes the batch dimension.
_PROBE_BATCH = 2
_INT_DTYPES = ("int8", "uint8", "int16")


class Runtime(ABC):
    """A loaded model that turns a float32 batch into float32 scores."""

    #: "ai_edge_litert" | "tflite_runtime"
    name: str
    #: Input and output as the model file declares them (batch dimension None).
    input_spec: TensorSpec
    output_spec: TensorSpec
    #: True when the input's batch dimension can be resized (one invoke per batch).
    batchable: bool
    #: False when the model runs without the default delegates (XNNPACK fallback).
    uses_default_delegates: bool
    num_threads: int

    @abstractmethod
    def run(self, x: np.ndarray) -> np.ndarray:
        """Scores for a preprocessed float32 batch ``(N, ...)``: float32 ``(N, classes)``."""

    @abstractmethod
    def run_filled(self, n: int, fill: Callable[[np.ndarray], object]) -> np.ndarray:
        """Scores for ``n`` inputs that ``fill`` writes, in the input's own dtype, into the
        C-contiguous array ``(n, *input shape)`` it is given: the interpreter's input
        tensor itself where the batch runs in one invoke (the batch is never copied), else
        a new array. ``fill`` must not keep the array."""

    def close(self) -> None:  # noqa: B027  optional for implementations
        """Release the interpreter (the object must not be used afterwards)."""


# ------------------------------------------------------------------ interpreters


@dataclass(frozen=True)
class _Backend:
    """An interpreter implementation with the ``tf.lite.Interpreter`` API."""

    name: str
    interpreter_cls: Any
    #: Op resolver enum with BUILTIN_WITHOUT_DEFAULT_DELEGATES, or None if unsupported.
    resolver_type: Any


def _litert() -> _Backend | None:
    try:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType
    except ImportError:
        return None
    return _Backend("ai_edge_litert", Interpreter, OpResolverType)


def _tflite_runtime() -> _Backend | None:
    try:
        from tflite_runtime.interpreter import (  # type: ignore[import-not-found]
            Interpreter,
            OpResolverType,
        )
    except ImportError:
        return None
    return _Backend("tflite_runtime", Interpreter, OpResolverType)


def select_backend() -> _Backend:
    """LiteRT, else tflite_runtime; a clear error when neither is installed."""
    backend = _litert() or _tflite_runtime()
    if backend is None:
        msg = (
            "no TFLite interpreter is installed: install LiteRT with "
            "`pip install 'edgeinfer[agent]'` (ai-edge-litert) or tflite-runtime"
        )
        raise ModelLoadError(msg)
    return backend


def _spec(detail: dict[str, Any]) -> TensorSpec:
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorSpec(
        shape=[None, *(int(d) for d in detail["shape"][1:])],
        dtype=np.dtype(detail["dtype"]).name,
        scale=float(scale),
        zero_point=int(zero_point),
    )


class InterpreterRuntime(Runtime):
    """A :class:`Runtime` over any interpreter with the ``tf.lite.Interpreter`` API."""

    def __init__(
        self,
        *,
        backend: _Backend,
        model_path: Path | None,
        model_content: bytes | None,
        num_threads: int,
        use_default_delegates: bool,
    ) -> None:
        self.name = backend.name
        self.num_threads = num_threads
        self._backend = backend
        self._source = {"model_path": model_path, "model_content": model_content}
        self._what = str(model_path) if model_path is not None else "model bytes"
        self.uses_default_delegates = use_default_delegates
        try:
            self._open(default_delegates=use_default_delegates)
        except ModelLoadError as first:
            if not use_default_delegates or backend.resolver_type is None:
                raise
            try:
                self._open(default_delegates=False)
            except ModelLoadError:
                raise first from None
            self.uses_default_delegates = False
            logger.warning(
                "model failed its first invoke with the default delegates (XNNPACK); running "
                'without them runtime="%s" model="%s" error="%s"',
                self.name,
                self._what,
                first,
            )
        self._check_batching()

    # -------------------------------------------------------------- loading

    def _new_interpreter(self, *, default_delegates: bool) -> Any:
        kwargs: dict[str, Any] = {"num_threads": self.num_threads}
        path, content = self._source["model_path"], self._source["model_content"]
        if path is not None:
            kwargs["model_path"] = str(path)
        else:
            kwargs["model_content"] = content
        if not default_delegates:
            resolver = self._backend.resolver_type.BUILTIN_WITHOUT_DEFAULT_DELEGATES
            kwargs["experimental_op_resolver_type"] = resolver
        return self._backend.interpreter_cls(**kwargs)

    def _open(self, *, default_delegates: bool) -> None:
        """Create, allocate and test-invoke the interpreter; ModelLoadError on failure."""
        stage = "parse"
        try:
            interp = self._new_interpreter(default_delegates=default_delegates)
            stage = "allocate"
            interp.allocate_tensors()
            inputs, outputs = interp.get_input_details(), interp.get_output_details()
            if len(inputs) != 1 or len(outputs) != 1:
                msg = (
                    f"{self._what} has {len(inputs)} inputs and {len(outputs)} outputs; the "
                    "agent runs classifiers with one input and one output"
                )
                raise ModelLoadError(msg)
            inp, out = inputs[0], outputs[0]
            stage = "invoke"
            interp.set_tensor(inp["index"], np.zeros(inp["shape"], dtype=inp["dtype"]))
            interp.invoke()
        except ModelLoadError:
            raise
        except Exception as exc:  # noqa: BLE001  LiteRT raises ValueError/RuntimeError
            delegates = "default delegates" if default_delegates else "no default delegates"
            msg = (
                f"{self.name} cannot {stage} {self._what} ({delegates}): "
                f"{type(exc).__name__}: {str(exc).strip()[:500]}"
            )
            raise ModelLoadError(msg) from exc
        self._interp = interp
        self._in = inp
        self._out = out
        self.input_spec = _spec(inp)
        self.output_spec = _spec(out)
        self._in_dtype = np.dtype(inp["dtype"])
        self._sample_shape = tuple(int(d) for d in inp["shape"][1:])
        self._ndim = len(self._sample_shape) + 1
        # Quantization parameters from the model file, precomputed for run().
        self._in_q: tuple[np.float32, np.float32, int, int] | None = None
        if self.input_spec.quantized:
            info = np.iinfo(self._in_dtype)
            self._in_q = (
                np.float32(1.0 / self.input_spec.scale),
                np.float32(self.input_spec.zero_point),
                int(info.min),
                int(info.max),
            )
        self._out_q: tuple[np.float32, np.float32] | None = None
        if self.output_spec.quantized:
            self._out_q = (
                np.float32(self.output_spec.scale),
                np.float32(self.output_spec.zero_point),
            )
        self._fixed_batch = int(inp["shape"][0])
        self._batch = self._fixed_batch
        self._default_delegates = default_delegates

    def _check_batching(self) -> None:
        """Batchable when the signature has a free batch dim or a resize test succeeds."""
        signature = self._in.get("shape_signature")
        if signature is not None and len(signature) and int(signature[0]) == -1:
            self.batchable = True
            return
        try:
            self._resize(_PROBE_BATCH)
            self._interp.set_tensor(
                self._in["index"], np.zeros(self._in_shape(_PROBE_BATCH), dtype=self._in_dtype)
            )
            self._interp.invoke()
            out = self._interp.get_tensor(self._out["index"])
            if out.shape[0] != _PROBE_BATCH:
                msg = f"output batch {out.shape[0]} != input batch {_PROBE_BATCH}"
                raise ValueError(msg)
            self.batchable = True
        except Exception as exc:  # noqa: BLE001  a failed resize leaves the interpreter unusable
            logger.info(
                'model has a fixed batch dimension; looping over samples model="%s" batch=%d '
                'reason="%s"',
                self._what,
                self._fixed_batch,
                exc,
            )
            self._open(default_delegates=self._default_delegates)
            self.batchable = False

    def _in_shape(self, n: int) -> list[int]:
        return [n, *self._sample_shape]

    def _resize(self, n: int) -> None:
        self._interp.resize_tensor_input(self._in["index"], self._in_shape(n), strict=False)
        self._interp.allocate_tensors()
        self._batch = n

    # ------------------------------------------------------------------ run

    def run(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.shape[1:] != self._sample_shape or x.ndim != self._ndim:
            shape = ", ".join(map(str, self._sample_shape))
            msg = f"model input must be shaped (N, {shape}), got {x.shape}"
            raise DecodeError("wrong_shape", msg)
        if x.shape[0] == 0:
            return np.zeros((0, *self._out["shape"][1:]), dtype=np.float32)
        if self._in_q is not None:
            inv_scale, zero_point, lo, hi = self._in_q
            q = np.clip(np.rint(x * inv_scale) + zero_point, lo, hi).astype(self._in_dtype)
        else:
            q = x.astype(self._in_dtype, copy=False)
        return self._run_prepared(q)

    def run_filled(self, n: int, fill: Callable[[np.ndarray], object]) -> np.ndarray:
        if n <= 0:
            return np.zeros((0, *self._out["shape"][1:]), dtype=np.float32)
        if not self.batchable:
            batch = np.empty(self._in_shape(n), dtype=self._in_dtype)
            fill(batch)
            return self._finish(self._run_fixed(batch))
        if n != self._batch:
            self._resize(n)
        # tensor() is a view of the interpreter's input buffer; invoke() refuses to run
        # while any view of its buffers is alive, so none may outlive the fill: not this
        # frame's, nor one held by the traceback of a fill that failed.
        view = self._interp.tensor(self._in["index"])()
        try:
            fill(view)
        except BaseException as exc:
            del view
            traceback.clear_frames(exc.__traceback__)
            raise
        del view
        self._interp.invoke()
        return self._finish(self._interp.get_tensor(self._out["index"]))

    def _run_prepared(self, q: np.ndarray) -> np.ndarray:
        n = q.shape[0]
        if self.batchable:
            if n != self._batch:
                self._resize(n)
            raw = self._invoke(q)
        else:
            raw = self._run_fixed(q)
        return self._finish(raw)

    def _finish(self, raw: np.ndarray) -> np.ndarray:
        """float32 scores from the output tensor's copy (dequantized, never aliased)."""
        if self._out_q is not None:
            scale, zero_point = self._out_q
            return (raw.astype(np.float32) - zero_point) * scale
        return np.array(raw, dtype=np.float32, copy=True)

    def _invoke(self, q: np.ndarray) -> np.ndarray:
        self._interp.set_tensor(self._in["index"], q)
        self._interp.invoke()
        # get_tensor returns a copy (tensor() would return a view); run() copies again for
        # float outputs, so results never alias the interpreter's buffers.
        out: np.ndarray = self._interp.get_tensor(self._out["index"])
        return out

    def _run_fixed(self, q: np.ndarray) -> np.ndarray:
        """Chunks of the model's fixed batch size, the last one zero-padded; no reallocation."""
        size = self._fixed_batch
        n = q.shape[0]
        parts = []
        for start in range(0, n, size):
            chunk = q[start : start + size]
            if chunk.shape[0] < size:
                pad = np.zeros((size - chunk.shape[0], *q.shape[1:]), dtype=q.dtype)
                chunk = np.concatenate([chunk, pad])
            parts.append(self._invoke(chunk))
        return np.concatenate(parts)[:n]

    def close(self) -> None:
        self._interp = None


# -------------------------------------------------------------------- loading


def load_runtime(
    *,
    model_path: Path | None = None,
    model_content: bytes | None = None,
    num_threads: int = 1,
    use_default_delegates: bool = True,
) -> Runtime:
    """Load a ``.tflite`` model from exactly one of ``model_path`` or ``model_content``.

    Raises :class:`~edge_agent.exceptions.ModelLoadError` naming what failed. A corrupt
    file can crash LiteRT itself: untrusted models go through :mod:`edge_agent.probe` first.
    """
    if (model_path is None) == (model_content is None):
        msg = "load_runtime needs exactly one of model_path or model_content"
        raise ModelLoadError(msg)
    if isinstance(num_threads, bool) or not isinstance(num_threads, int) or num_threads < 1:
        msg = f"num_threads must be an integer >= 1, got {num_threads!r}; fix --threads"
        raise AgentConfigError(msg)
    if model_path is not None:
        model_path = Path(model_path)
        if not model_path.is_file():
            msg = f"model file {model_path} does not exist or is not a file"
            raise ModelLoadError(msg)
    elif not model_content:
        msg = "model_content is empty: pass the bytes of a .tflite file"
        raise ModelLoadError(msg)
    backend = select_backend()
    runtime = InterpreterRuntime(
        backend=backend,
        model_path=model_path,
        model_content=model_content,
        num_threads=num_threads,
        use_default_delegates=use_default_delegates,
    )
    logger.info(
        'model loaded runtime="%s" input="%s %s" output="%s %s" batchable=%s '
        "default_delegates=%s threads=%d",
        runtime.name,
        runtime.input_spec.dtype,
        runtime.input_spec.shape,
        runtime.output_spec.dtype,
        runtime.output_spec.shape,
        runtime.batchable,
        runtime.uses_default_delegates,
        num_threads,
    )
    return runtime


def check_against_manifest(runtime: Runtime, manifest: Manifest) -> list[str]:
    """Compare the model file's tensors with the manifest's.

    A shape or dtype mismatch raises :class:`ModelLoadError` (the agent would feed the model
    the wrong tensors). Differing quantization parameters are returned as warnings: the
    model file's parameters are the ones used.
    """
    warnings: list[str] = []
    for which, actual, declared in (
        ("input", runtime.input_spec, manifest.input),
        ("output", runtime.output_spec, manifest.output),
    ):
        if list(actual.shape[1:]) != list(declared.shape[1:]) or actual.dtype != declared.dtype:
            msg = (
                f"{manifest.name} {manifest.version}: the model's {which} is {actual.dtype} "
                f"{actual.shape} but the manifest says {declared.dtype} {declared.shape}; "
                "re-export the bundle"
            )
            raise ModelLoadError(msg)
        if actual.dtype in _INT_DTYPES and (
            not np.isclose(actual.scale, declared.scale, rtol=1e-5, atol=0.0)
            or actual.zero_point != declared.zero_point
        ):
            warnings.append(
                f"{which} quantization in the manifest (scale={declared.scale}, "
                f"zero_point={declared.zero_point}) differs from the model file's "
                f"(scale={actual.scale}, zero_point={actual.zero_point}); using the model's"
            )
    return warnings
