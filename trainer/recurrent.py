"""The ``int8-loop`` export of recurrent models: a LiteRT ``WHILE`` loop with int8 matmuls.

Unrolled int8 recurrent models are larger than their float32 files (every unrolled tensor
carries its own quantization parameters: basic-motions GRU 117 KB int8 vs 86 KB float32).
This route keeps the recurrence as one loop instead:

1. :func:`loop_clone` rebuilds the model with ``unroll=False``, float32 layers and a fixed
   batch of 1 (a free batch fails to convert: "TensorListReserve requires element_shape to
   be static"). The converter emits a ``WHILE`` op whose body holds one step's ops.
2. The float32 loop model is converted with TensorFlow (builtin ops only).
3. ``ai-edge-quantizer`` quantizes its ``FULLY_CONNECTED`` and ``CONV_2D`` ops to static
   int8 (int8 per-channel weights, int8 activations calibrated on training inputs, inside
   the loop body too): TensorFlow's own int8 calibration of a ``WHILE`` loop segfaults, and
   ai-edge-quantizer's all-ops recipe cannot quantize the loop's own inputs (measured with
   ai-edge-quantizer 0.10: "INPUT ... not found in tensor_name_to_qsv"). Elementwise gate ops
   (sigmoid, tanh, add, mul) and the model's input and output stay float32.

The result has a fixed batch of 1: LiteRT (and the agent) run a batch one sample at a time.
Measurements of every route tried are in ``bench/recurrent_routes.py`` and docs/trainer.md.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import numpy as np

from trainer.exceptions import ExportError

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)

#: Ops that ``int8-loop`` quantizes to static int8 with ai-edge-quantizer.
LOOP_INT8_OPS: tuple[str, ...] = ("FULLY_CONNECTED", "CONV_2D")
#: Calibration samples fed to ai-edge-quantizer (one at a time, batch 1).
LOOP_CALIBRATION_SAMPLES = 100


def has_recurrence(model: keras.Model) -> bool:
    """True when a layer of ``model`` (or of a nested model) is recurrent (has ``unroll``)."""
    import keras

    def walk(m: keras.Model) -> bool:
        for layer in m.layers:
            if "unroll" in layer.get_config():
                return True
            if isinstance(layer, keras.Model) and walk(layer):
                return True
        return False

    return walk(model)


def loop_clone(model: keras.Model) -> keras.Model:
    """``model`` with ``unroll=False``, float32 layers and a fixed batch of 1, weights copied."""
    from trainer.models import export_clone

    return export_clone(model, unroll=False, batch_size=1)


def quantize_loop_int8(
    float_model: bytes,
    calibration: np.ndarray,
    *,
    ops: tuple[str, ...] = LOOP_INT8_OPS,
    samples: int = LOOP_CALIBRATION_SAMPLES,
) -> bytes:
    """Static int8 for ``ops`` of a float LiteRT model (names and signature kept) via
    ai-edge-quantizer, calibrated on ``calibration`` (preprocessed model inputs)."""
    try:
        from ai_edge_quantizer import qtyping, quantizer
        from ai_edge_quantizer.calibrator import CalibrationMode
    except ImportError as exc:
        msg = "the int8-loop variant needs ai-edge-quantizer: pip install 'edgeinfer[trainer]'"
        raise ExportError(msg) from exc
    from ai_edge_litert.interpreter import Interpreter

    signatures = Interpreter(model_content=float_model).get_signature_list()
    if not signatures:
        msg = "int8-loop: the float model has no signature (convert it with strip_strings=False)"
        raise ExportError(msg)
    key = next(iter(signatures))
    input_name = signatures[key]["inputs"][0]
    q = quantizer.Quantizer(bytearray(float_model))
    for op in ops:
        q.add_static_config(".*", getattr(qtyping.TFLOperationName, op), 8, 8)
    n = min(len(calibration), samples)
    picks = np.linspace(0, len(calibration) - 1, n).round().astype(int)
    feed: list[dict[str, Any]] = [
        {input_name: np.asarray(calibration[i : i + 1], dtype=np.float32)} for i in picks
    ]
    # The profiler-based calibration reads the tensors inside the WHILE body; the default
    # mode fails there ("Tensor data is null").
    result = q.calibrate(
        {key: feed}, num_threads=1, mode=CalibrationMode.CALIBRATION_PROFILER_BASED
    )
    quantized = q.quantize(result, enable_progress_report=False).quantized_model
    if quantized is None:
        msg = "int8-loop: ai-edge-quantizer returned no model"
        raise ExportError(msg)
    return bytes(quantized)
