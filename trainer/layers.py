"""Keras layers the trainer adds that Keras does not ship (imports Keras: load lazily)."""

from __future__ import annotations

from typing import Any

import keras


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
