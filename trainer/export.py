"""Keras model -> LiteRT flatbuffer for each variant, and the bundles that carry them.

Conversion always starts from :func:`trainer.models.export_clone` (unrolled recurrences,
float32 layers) through ``tf.lite.TFLiteConverter.from_keras_model`` with builtin ops only.
Measured with Keras 3.15 / TF 2.21 / ai-edge-litert 2.3: this is the route on which every
architecture converts to all four variants with a resizable batch; ``WHILE`` loops fail to
convert with a free batch and crash int8 calibration.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import keras
import numpy as np

from trainer.exceptions import ExportError
from trainer.models import export_clone
from trainer.quantization import QuantizationConfig

logger = logging.getLogger(__name__)


def convert(model: keras.Model, config: QuantizationConfig, *, clone: bool = True) -> bytes:
    """Convert ``model`` to a LiteRT flatbuffer with the settings of ``config``."""
    import tensorflow as tf

    source = export_clone(model) if clone else model
    if config.integer_only:
        _refuse_while_loops(source)
    converter = config.apply(tf.lite.TFLiteConverter.from_keras_model(source))
    try:
        with _quiet_converter():
            result = converter.convert()
    except Exception as exc:  # the converter raises ConverterError, ValueError, RuntimeError
        first = str(exc).strip().splitlines()[0][:400] if str(exc).strip() else repr(exc)
        msg = (
            f"converting {model.name} to the {config.variant} variant failed: {first}; "
            "only LiteRT builtin ops are allowed (no Flex ops)"
        )
        raise ExportError(msg) from exc
    logger.info('converted variant="%s" bytes=%d', config.variant, len(result))
    return bytes(result)


def _refuse_while_loops(model: keras.Model) -> None:
    """int8 calibration of a model with a WHILE loop segfaults the converter: refuse it."""
    looping = [
        layer.name
        for layer in _all_layers(model)
        if "unroll" in layer.get_config() and not layer.get_config()["unroll"]
    ]
    if looping:
        msg = (
            f"int8 calibration of recurrent layers with unroll=False ({', '.join(looping)}) "
            "crashes the converter; convert the export_clone() of the model (unrolled)"
        )
        raise ExportError(msg)


def _all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    layers: list[keras.layers.Layer] = []
    for layer in model.layers:
        layers.append(layer)
        if isinstance(layer, keras.Model):
            layers.extend(_all_layers(layer))
    return layers


class _quiet_converter:
    """Silence the converter's C++ chatter on stderr (MLIR dumps) while it runs."""

    def __enter__(self) -> None:
        self._saved = os.dup(2)
        self._tmp = tempfile.TemporaryFile()
        os.dup2(self._tmp.fileno(), 2)

    def __exit__(self, *exc: Any) -> None:
        os.dup2(self._saved, 2)
        os.close(self._saved)
        if exc[0] is not None:
            self._tmp.seek(0)
            tail = self._tmp.read()[-4000:].decode(errors="replace")
            logger.debug("converter stderr: %s", tail)
        self._tmp.close()


def representative_inputs(x: np.ndarray, y: np.ndarray, *, limit: int = 200) -> np.ndarray:
    """Up to ``limit`` preprocessed training inputs, every class represented."""
    if len(x) <= limit:
        return np.asarray(x, dtype=np.float32)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    # Round-robin over classes so rare classes are calibrated too.
    by_class = [order[y[order] == c] for c in np.unique(y)]
    picked: list[int] = []
    i = 0
    while len(picked) < limit:
        for idx in by_class:
            if i < len(idx) and len(picked) < limit:
                picked.append(int(idx[i]))
        i += 1
    return np.asarray(x[np.sort(picked)], dtype=np.float32)


def write_model(path: Path, model: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model)
    return path
