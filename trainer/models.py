"""Model builders sized for small devices: a CNN for images; LSTM, GRU and 1-D conv for windows.

MiniRocket (``minirocket``) is fitted, not built from a config: :mod:`trainer.minirocket`.

Every builder returns a functional Keras model whose input has a free batch dimension and
whose output is a float32 softmax. :func:`export_clone` rebuilds a trained model with
unrolled recurrent layers and float32 weights: the form that converts to LiteRT builtin ops
for all four variants (a ``WHILE`` loop neither converts with a free batch nor calibrates).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Literal, get_args

from trainer.exceptions import TrainerConfigError

if TYPE_CHECKING:
    import keras

logger = logging.getLogger(__name__)

Arch = Literal["cnn", "lstm", "gru", "conv1d", "minirocket"]
ARCHS: tuple[Arch, ...] = get_args(Arch)
IMAGE_ARCHS: tuple[Arch, ...] = ("cnn",)
SEQUENCE_ARCHS: tuple[Arch, ...] = ("lstm", "gru", "conv1d", "minirocket")

#: A recurrent model's front end strides until at most this many time steps remain.
MAX_RNN_STEPS = 32
#: A CNN flattens its last feature map when it has at most this many values, else averages.
FLATTEN_MAX = 1024
DEFAULT_RNN_L2 = 1e-3


@dataclass(frozen=True, kw_only=True)
class ModelConfig:
    """Architecture and size. Zero/empty fields take the per-architecture default."""

    arch: Arch
    filters: tuple[int, ...] = ()
    units: int = 0
    #: Stride of the Conv1D front end of lstm/gru (0 = auto, 1 = no front end).
    conv_stride: int = 0
    dropout: float = 0.2
    #: L2 penalty on the recurrent layer's kernels: keeps gate pre-activations in a range
    #: that int8 (one scale for all four gates of a step) can resolve.
    #: None = 1e-3 for lstm/gru (measured: int8 then agreed with Keras on every
    #: basic-motions test sample over three seeds; without it, one sample flipped per seed).
    l2: float | None = None
    #: minirocket: number of features (rounded down to a multiple of 84; 0 = 10,000).
    features: int = 0

    def resolved(self, input_shape: tuple[int, ...]) -> ModelConfig:
        """This config with the defaults filled in for ``input_shape``."""
        if self.arch not in ARCHS:
            msg = f"unknown --arch {self.arch!r}: use one of {', '.join(ARCHS)}"
            raise TrainerConfigError(msg)
        if self.arch == "cnn":
            small = len(input_shape) == 3 and min(input_shape[0], input_shape[1]) <= 16
            filters = self.filters or ((32, 64) if small else (16, 32, 64))
            return replace(self, filters=filters, units=self.units or 64, l2=self.l2 or 0.0)
        if self.arch == "minirocket":
            from trainer.minirocket import DEFAULT_FEATURES

            return replace(self, features=self.features or DEFAULT_FEATURES, l2=0.0)
        if self.arch == "conv1d":
            return replace(
                self, filters=self.filters or (32, 64, 64), units=self.units or 0, l2=self.l2 or 0.0
            )
        steps = input_shape[0]
        return replace(
            self,
            filters=self.filters or (32,),
            units=self.units or 32,
            conv_stride=self.conv_stride or auto_stride(steps),
            l2=DEFAULT_RNN_L2 if self.l2 is None else self.l2,
        )

    def to_dict(self) -> dict[str, Any]:
        return {
            "arch": self.arch,
            "filters": list(self.filters),
            "units": self.units,
            "conv_stride": self.conv_stride,
            "dropout": self.dropout,
            "l2": self.l2,
            "features": self.features,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        return cls(
            arch=data["arch"],
            filters=tuple(int(f) for f in data.get("filters", ())),
            units=int(data.get("units", 0)),
            conv_stride=int(data.get("conv_stride", 0)),
            dropout=float(data.get("dropout", 0.2)),
            l2=None if data.get("l2") is None else float(data["l2"]),
            features=int(data.get("features", 0)),
        )


def auto_stride(steps: int) -> int:
    """The smallest power of two that leaves at most :data:`MAX_RNN_STEPS` time steps."""
    stride = 1
    while math.ceil(steps / stride) > MAX_RNN_STEPS:
        stride *= 2
    return stride


def check_arch(arch: str, kind: str) -> None:
    """Refuse an architecture that does not fit the data (cnn on sequences, ...)."""
    allowed = IMAGE_ARCHS if kind == "image" else SEQUENCE_ARCHS
    if arch not in allowed:
        msg = f"--arch {arch} does not fit {kind} data: use {' or '.join(allowed)} for {kind}s"
        raise TrainerConfigError(msg)


def build_model(
    config: ModelConfig,
    input_shape: tuple[int, ...],
    num_classes: int,
    *,
    unroll: bool = False,
) -> keras.Model:
    """Build (uncompiled) the model ``config`` describes for inputs of ``input_shape``."""
    import keras

    cfg = config.resolved(input_shape)
    if cfg.arch == "minirocket":
        msg = "--arch minirocket is fitted to data, not built: use trainer.minirocket.fit"
        raise TrainerConfigError(msg)
    inputs = keras.Input(shape=input_shape, name="input")
    if cfg.arch == "cnn":
        x = _cnn_body(inputs, cfg)
    elif cfg.arch == "conv1d":
        x = _conv1d_body(inputs, cfg)
    else:
        x = _rnn_body(inputs, cfg, unroll=unroll)
    if cfg.dropout > 0:
        x = keras.layers.Dropout(cfg.dropout, name="dropout")(x)
    outputs = keras.layers.Dense(
        num_classes, activation="softmax", dtype="float32", name="probabilities"
    )(x)
    return keras.Model(inputs, outputs, name=f"{cfg.arch}_classifier")


def _cnn_body(inputs: Any, cfg: ModelConfig) -> Any:
    import keras

    if len(inputs.shape) != 4:
        msg = f"--arch cnn needs images (H, W, C), got inputs shaped {tuple(inputs.shape[1:])}"
        raise TrainerConfigError(msg)
    x = inputs
    size = min(int(inputs.shape[1]), int(inputs.shape[2]))
    # Large images: a strided stem brings them down to at most 64 pixels before the blocks.
    stem = 0
    while size > 64:
        x = keras.layers.Conv2D(
            cfg.filters[0], 3, strides=2, padding="same", activation="relu", name=f"stem{stem}"
        )(x)
        size = math.ceil(size / 2)
        stem += 1
    for i, f in enumerate(cfg.filters):
        x = keras.layers.Conv2D(f, 3, padding="same", activation="relu", name=f"conv{i}")(x)
        if size > 2:
            x = keras.layers.MaxPooling2D(2, name=f"pool{i}")(x)
            size //= 2
    # Small feature maps keep their layout (digits: 2x2x64); large ones are averaged.
    if math.prod(int(d) for d in x.shape[1:]) <= FLATTEN_MAX:
        x = keras.layers.Flatten(name="flatten")(x)
    else:
        x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    if cfg.units:
        x = keras.layers.Dense(cfg.units, activation="relu", name="dense")(x)
    return x


def _conv1d_body(inputs: Any, cfg: ModelConfig) -> Any:
    import keras

    x = inputs
    steps = int(inputs.shape[1])
    for i, f in enumerate(cfg.filters):
        x = keras.layers.Conv1D(f, 5, padding="same", activation="relu", name=f"conv{i}")(x)
        if steps > 8:
            x = keras.layers.MaxPooling1D(2, name=f"pool{i}")(x)
            steps //= 2
    x = keras.layers.GlobalAveragePooling1D(name="gap")(x)
    if cfg.units:
        x = keras.layers.Dense(cfg.units, activation="relu", name="dense")(x)
    return x


def _rnn_body(inputs: Any, cfg: ModelConfig, *, unroll: bool) -> Any:
    import keras

    x = inputs
    if cfg.conv_stride > 1:
        x = keras.layers.Conv1D(
            cfg.filters[0],
            max(3, cfg.conv_stride),
            strides=cfg.conv_stride,
            padding="same",
            activation="relu",
            name="frontend",
        )(x)
    layer = keras.layers.LSTM if cfg.arch == "lstm" else keras.layers.GRU
    reg = keras.regularizers.L2(cfg.l2) if cfg.l2 else None
    options: dict[str, Any] = {}
    if cfg.arch == "gru":
        # reset_after=True puts a bias inside the recurrent matmul; unrolled int8 then
        # needs a differently scaled copy of it at every step (162 KB vs 117 KB measured).
        options["reset_after"] = False
    return layer(
        cfg.units,
        unroll=unroll,
        kernel_regularizer=reg,
        recurrent_regularizer=reg,
        name=cfg.arch,
        **options,
    )(x)


def export_clone(
    model: keras.Model, *, unroll: bool = True, batch_size: int | None = None
) -> keras.Model:
    """The same model with unrolled recurrent layers and float32 layers, weights copied.

    ``unroll=True`` turns the recurrence into plain ops, so the converter emits no ``WHILE``
    loop: the batch stays resizable and int8 calibration works. Mixed-precision layers are
    rebuilt in float32 (their variables already are). ``unroll=False`` with a fixed
    ``batch_size`` is the loop form of ``trainer.recurrent.loop_clone``.
    """
    import keras

    def clone_layer(layer: keras.layers.Layer) -> keras.layers.Layer:
        cfg = layer.get_config()
        if "unroll" in cfg:
            cfg["unroll"] = unroll
        if "dtype" in cfg and not isinstance(layer, keras.layers.InputLayer):
            cfg["dtype"] = "float32"
        return layer.__class__.from_config(cfg)

    inputs = None
    if batch_size is not None:
        shape = tuple(int(d) for d in model.input_shape[1:])
        inputs = keras.Input(batch_shape=(batch_size, *shape), name="input")
    clone = keras.models.clone_model(model, input_tensors=inputs, clone_function=clone_layer)
    clone.set_weights(model.get_weights())
    return clone
