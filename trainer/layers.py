"""Keras layers the trainer adds that Keras does not ship (imports Keras: load lazily)."""

from __future__ import annotations

from typing import Any

import keras
import numpy as np


@keras.saving.register_keras_serializable(package="edgeinfer")
class RandomGain(keras.layers.Layer):
    """Multiplies each sequence window, per channel, by a gain from [1 - factor, 1 + factor].

    Active only when called with ``training=True``, like every Keras random layer.
    """

    def __init__(self, factor: float, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.factor = float(factor)
        self.seed = seed
        self.generator = keras.random.SeedGenerator(seed)

    def call(self, inputs: Any, training: bool | None = None) -> Any:
        if not training or not self.factor:
            return inputs
        shape = (keras.ops.shape(inputs)[0], 1, keras.ops.shape(inputs)[-1])
        gain = keras.random.uniform(
            shape, 1.0 - self.factor, 1.0 + self.factor, seed=self.generator
        )
        return inputs * keras.ops.cast(gain, inputs.dtype)

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "factor": self.factor, "seed": self.seed}


#: :class:`ProportionPositive` compares at most this many values per window in one op, so a
#: long window's intermediate tensors stay small (ACSF1: 1,460 steps x 42 kernels x 4 biases).
PPV_CHUNK_VALUES = 262_144


@keras.saving.register_keras_serializable(package="edgeinfer")
class ProportionPositive(keras.layers.Layer):
    """MiniRocket's PPV pooling: per channel k and bias b[k, f], the share of time steps
    where the input exceeds b[k, f]. (B, T, K) -> (B, K * n_f), features ordered k, then f.

    LiteRT builtin ops: ``transpose`` (time last), ``greater``, ``cast``, ``mean`` over the
    last axis. Time last is measured 3-5x faster in LiteRT than comparing and averaging
    over axis 1 (the reduction and the broadcast run over contiguous memory). The biases are
    a fixed weight.
    """

    def __init__(self, biases: Any = None, *, shape: tuple[int, int] | None = None, **kwargs: Any):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        if biases is not None:
            shape = tuple(int(d) for d in np.shape(biases))  # type: ignore[assignment]
        if shape is None or len(shape) != 2:
            msg = "ProportionPositive needs biases shaped (channels, features per channel)"
            raise ValueError(msg)
        self.bias_shape = (int(shape[0]), int(shape[1]))
        self._initial = None if biases is None else np.asarray(biases, dtype="float32")

    def build(self, input_shape: Any) -> None:
        init = keras.initializers.Constant(self._initial) if self._initial is not None else "zeros"
        self.biases = self.add_weight(
            shape=self.bias_shape, initializer=init, trainable=False, name="biases"
        )
        self.built = True

    def call(self, inputs: Any) -> Any:
        ops = keras.ops
        steps = int(inputs.shape[1])
        channels, per_channel = self.bias_shape
        chunk = max(1, min(per_channel, PPV_CHUNK_VALUES // max(1, steps * channels)))
        series = ops.expand_dims(ops.transpose(inputs, (0, 2, 1)), 2)  # (B, K, 1, T)
        parts = []
        for start in range(0, per_channel, chunk):
            b = ops.expand_dims(self.biases[:, start : start + chunk], -1)  # (K, f, 1)
            parts.append(ops.mean(ops.cast(ops.greater(series, b), inputs.dtype), axis=-1))
        ppv = parts[0] if len(parts) == 1 else ops.concatenate(parts, axis=-1)
        return ops.reshape(ppv, (-1, channels * per_channel))

    def compute_output_shape(self, input_shape: Any) -> Any:
        return (input_shape[0], self.bias_shape[0] * self.bias_shape[1])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "shape": self.bias_shape}


@keras.saving.register_keras_serializable(package="edgeinfer")
class Standardize(keras.layers.Layer):
    """``(x - mean) * scale`` per feature, with fixed weights.

    Before a ``Dense`` layer LiteRT's converter folds the ``MUL`` into its weights (a ``SUB``
    remains): keep ``scale`` within a small factor across features when the model is to be
    quantized (:data:`trainer.minirocket.MIN_SCALE_OF_MEDIAN`).
    """

    def __init__(self, mean: Any = None, scale: Any = None, *, size: int = 0, **kwargs: Any):
        kwargs.setdefault("trainable", False)
        super().__init__(**kwargs)
        self.size = int(np.size(mean)) if mean is not None else int(size)
        self._initial = (
            None
            if mean is None or scale is None
            else (np.asarray(mean, dtype="float32"), np.asarray(scale, dtype="float32"))
        )

    def build(self, input_shape: Any) -> None:
        mean, scale = self._initial or (np.zeros(self.size), np.ones(self.size))
        self.mean = self.add_weight(
            shape=(self.size,), initializer=keras.initializers.Constant(mean),
            trainable=False, name="mean",
        )  # fmt: skip
        self.scale = self.add_weight(
            shape=(self.size,), initializer=keras.initializers.Constant(scale),
            trainable=False, name="scale",
        )  # fmt: skip
        self.built = True

    def call(self, inputs: Any) -> Any:
        return (inputs - self.mean) * self.scale

    def compute_output_shape(self, input_shape: Any) -> Any:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "size": self.size}
