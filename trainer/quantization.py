"""Converter settings for the LiteRT variants, in one config object.

``QuantizationConfig.for_float32()``, ``for_float16()``, ``for_dynamic()``,
``for_int8(representative_data)`` and ``for_int8_loop(representative_data)`` (recurrent
models: a ``WHILE`` loop with int8 matmuls, :mod:`trainer.recurrent`) are the presets;
:meth:`QuantizationConfig.apply` is the one place that sets them on a
``tf.lite.TFLiteConverter``. Every variant is restricted to LiteRT
builtin ops, so a model that would need Flex (TensorFlow) ops fails to convert instead of
failing on the device.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, Literal, get_args

import numpy as np

from trainer.exceptions import QuantizationError

InferenceType = Literal["float32", "int8"]
#: The variants the trainer exports. ``int8-loop`` applies to recurrent models only.
ExportVariant = Literal["float32", "float16", "dynamic", "int8", "int8-loop"]
EXPORT_VARIANTS: tuple[ExportVariant, ...] = get_args(ExportVariant)
#: How a recurrence is exported: unrolled into plain ops, or kept as a ``WHILE`` loop.
Recurrence = Literal["unrolled", "loop"]

#: Calibration samples used for int8 when more training data is available.
DEFAULT_CALIBRATION_SAMPLES = 200


@dataclass(frozen=True, kw_only=True, eq=False)
class QuantizationConfig:
    """How one variant is converted.

    ``representative_data`` holds model inputs (already preprocessed, float32, shaped
    (N, *input_shape)); int8 calibration feeds them one sample at a time.
    """

    variant: ExportVariant
    optimize: bool = False
    supported_types: tuple[str, ...] = ()
    representative_data: np.ndarray | None = None
    num_calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES
    inference_input_type: InferenceType = "float32"
    inference_output_type: InferenceType = "float32"
    integer_only: bool = False
    #: Drop tensor names and signature defs from the flatbuffer: an unrolled RNN has
    #: hundreds of tensors whose names take up to 40 % of the file. Inputs and outputs
    #: are still found by index (``get_input_details``).
    strip_strings: bool = True
    #: ``loop``: convert the recurrence as a ``WHILE`` loop (fixed batch 1) and quantize
    #: ``loop_int8_ops`` to static int8 with ai-edge-quantizer (:mod:`trainer.recurrent`).
    recurrence: Recurrence = "unrolled"
    loop_int8_ops: tuple[str, ...] = ()

    @property
    def calibrated(self) -> bool:
        """True when activations are calibrated on ``representative_data``."""
        return self.integer_only or bool(self.loop_int8_ops)

    def __post_init__(self) -> None:
        if self.variant not in EXPORT_VARIANTS:
            msg = f"unknown variant {self.variant!r}: use one of {', '.join(EXPORT_VARIANTS)}"
            raise QuantizationError(msg)
        if self.calibrated:
            data = self.representative_data
            if data is None or len(data) == 0:
                msg = (
                    f"{self.variant} quantization needs representative data to calibrate "
                    "activation ranges: pass QuantizationConfig.for_int8(samples) with a few "
                    "hundred preprocessed training inputs"
                )
                raise QuantizationError(msg)
            if not np.issubdtype(data.dtype, np.floating):
                msg = (
                    f"{self.variant} representative data must be preprocessed float inputs, "
                    f"got {data.dtype}"
                )
                raise QuantizationError(msg)
            if not np.isfinite(data).all():
                msg = (
                    f"{self.variant} representative data contains NaN or infinity; clean the "
                    "training data"
                )
                raise QuantizationError(msg)
            if self.num_calibration_samples < 1:
                msg = f"num_calibration_samples must be >= 1, got {self.num_calibration_samples}"
                raise QuantizationError(msg)

    # ------------------------------------------------------------------------- presets

    @classmethod
    def for_float32(cls) -> QuantizationConfig:
        """No quantization: the reference LiteRT model."""
        return cls(variant="float32")

    @classmethod
    def for_float16(cls) -> QuantizationConfig:
        """Weights stored as float16 (half the size), computed in float32."""
        return cls(variant="float16", optimize=True, supported_types=("float16",))

    @classmethod
    def for_dynamic(cls) -> QuantizationConfig:
        """Dynamic-range: int8 weights, float activations, no calibration data."""
        return cls(variant="dynamic", optimize=True)

    @classmethod
    def for_int8(
        cls,
        representative_data: np.ndarray | None,
        *,
        num_calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
    ) -> QuantizationConfig:
        """Full integer: int8 weights and activations, int8 input and output tensors."""
        return cls(
            variant="int8",
            optimize=True,
            representative_data=representative_data,
            num_calibration_samples=num_calibration_samples,
            inference_input_type="int8",
            inference_output_type="int8",
            integer_only=True,
        )

    @classmethod
    def for_int8_loop(
        cls,
        representative_data: np.ndarray | None,
        *,
        num_calibration_samples: int = DEFAULT_CALIBRATION_SAMPLES,
    ) -> QuantizationConfig:
        """Recurrent models: a ``WHILE`` loop (not unrolled) whose matmuls and convolutions
        are static int8 (ai-edge-quantizer); gate ops, input and output stay float32."""
        from trainer.recurrent import LOOP_INT8_OPS

        return cls(
            variant="int8-loop",
            representative_data=representative_data,
            num_calibration_samples=num_calibration_samples,
            recurrence="loop",
            loop_int8_ops=LOOP_INT8_OPS,
        )

    @classmethod
    def for_variant(
        cls, variant: str, representative_data: np.ndarray | None = None
    ) -> QuantizationConfig:
        """The preset for ``variant`` (one of :data:`EXPORT_VARIANTS`)."""
        if variant == "float32":
            return cls.for_float32()
        if variant == "float16":
            return cls.for_float16()
        if variant == "dynamic":
            return cls.for_dynamic()
        if variant == "int8":
            return cls.for_int8(representative_data)
        if variant == "int8-loop":
            return cls.for_int8_loop(representative_data)
        msg = f"unknown variant {variant!r}: use one of {', '.join(EXPORT_VARIANTS)}"
        raise QuantizationError(msg)

    # ---------------------------------------------------------------------------- use

    def representative_dataset(self) -> Iterator[list[np.ndarray]]:
        """Calibration samples, one at a time, spread evenly over the data."""
        data = self.representative_data
        if data is None:
            return
        n = min(len(data), self.num_calibration_samples)
        for i in np.linspace(0, len(data) - 1, n).round().astype(int):
            yield [np.asarray(data[i : i + 1], dtype=np.float32)]

    def finalize(self, model: bytes) -> bytes:
        """Post-process the converter's output (strip names when ``strip_strings``)."""
        if not self.strip_strings:
            return model
        from tensorflow.lite.tools import flatbuffer_utils

        obj = flatbuffer_utils.convert_bytearray_to_object(bytearray(model))
        flatbuffer_utils.strip_strings(obj)
        return bytes(flatbuffer_utils.convert_object_to_bytearray(obj))

    def apply(self, converter: Any) -> Any:
        """Set this config on a ``tf.lite.TFLiteConverter`` and return it."""
        import tensorflow as tf

        converter.target_spec.supported_ops = (
            [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            if self.integer_only
            else [tf.lite.OpsSet.TFLITE_BUILTINS]
        )
        if self.optimize:
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
        if self.supported_types:
            converter.target_spec.supported_types = [
                getattr(tf, name) for name in self.supported_types
            ]
        if self.integer_only:
            converter.representative_dataset = self.representative_dataset
            converter.inference_input_type = getattr(tf, self.inference_input_type)
            converter.inference_output_type = getattr(tf, self.inference_output_type)
        return converter
