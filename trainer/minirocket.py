"""``--arch minirocket``: MiniRocket as a Keras model that converts to LiteRT builtin ops.

MiniRocket (Dempster et al. 2021) turns a window into features with fixed convolutions and
classifies them with a linear model. Its transform is plain tensor arithmetic, so the device
can run it as one LiteRT graph:

- 84 kernels of length 9 (weights -1, with 2 at three of the nine taps), at several
  dilations; a multichannel window sums the convolutions of a few channels per kernel and
  dilation. Here: ``Conv1D`` layers with fixed weights (zero for the channels a kernel does
  not read), two per dilation: "same" padding for the kernels whose features count every
  position, "valid" for those MiniRocket counts on the unpadded middle only (half of them,
  alternating).
- biases: quantiles of the convolution outputs of training windows;
- PPV pooling: the share of positions where a convolution output exceeds a bias
  (:class:`trainer.layers.ProportionPositive`: ``greater``, ``cast``, ``mean``).

The dilations, channel choices and biases are fitted by aeon's ``MiniRocket`` (the trainer
has aeon; the agent never imports it). The head is aeon's ``MiniRocketClassifier`` head: a
feature scaler (:class:`trainer.layers.Standardize`) and ``RidgeClassifierCV``
(scikit-learn) in a ``Dense`` softmax layer. The scaler divides by no less than half the
median feature spread (:data:`MIN_SCALE_OF_MEDIAN`; aeon divides by any spread): LiteRT's
converter folds the scaler into the ``Dense`` weights, and a near-constant feature divided
by its tiny spread got a weight 1,000x the others, which int8 (one scale per output) cannot
hold next to them. Its logits are the ridge scores times a temperature fitted on the ridge's
leave-one-out scores, so the softmax says how sure the ridge is (argmax unchanged).

Training has no epochs: the transform and ridge are fitted on the training part of the
split and scored on the validation part (what ``--arch auto`` compares), then fitted again on
the whole training split (train + validation) for the model that is saved and exported.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from itertools import combinations
from typing import Any

import numpy as np

from trainer.exceptions import TrainerConfigError

logger = logging.getLogger(__name__)

#: aeon's default (rounded down to a multiple of 84: 9,996 features).
DEFAULT_FEATURES = 10_000
MAX_DILATIONS_PER_KERNEL = 32
KERNEL_LENGTH = 9
#: The taps with weight 2 of the 84 kernels (every choice of 3 of the 9), in aeon's order.
KERNEL_INDICES = np.array(list(combinations(range(KERNEL_LENGTH), 3)), dtype=np.int32)
N_KERNELS = len(KERNEL_INDICES)
#: A feature is divided by its spread, but by no less than this share of the median spread.
#: Measured (seed 0, test accuracy, float / with the Dense weights rounded to int8 per
#: output): ACSF1 0.92 / 0.13 without the floor, 0.92 / 0.92 with it; ArrowHead 0.8457 /
#: 0.8171 -> 0.8686 / 0.8743; GunPoint, ItalyPowerDemand unchanged; JapaneseVowels 0.9892 /
#: 0.9703 -> 0.9838 / 0.9838.
MIN_SCALE_OF_MEDIAN = 0.5
#: Every bias is raised by this share of (1 + |bias|), in aeon's transform and in the model.
#: A flat stretch of a window convolves to exactly 0 (the kernels sum to 0) and biases fall
#: on such values; float sums in another order (aeon's, TensorFlow's, LiteRT's) then land on
#: either side at random: on ACSF1 3.7 % of the features differed between aeon and the Keras
#: graph, by up to 0.6. With the margin, 0.09 %, by at most 0.005.
TIE_MARGIN = 1e-2
#: Ridge penalties tried by leave-one-out, as aeon's ``MiniRocketClassifier``.
RIDGE_ALPHAS = np.logspace(-3, 3, 10)


def kernel_weights() -> np.ndarray:
    """(9, 84) float32: -1 everywhere, 2 at each kernel's three taps."""
    weights = -np.ones((KERNEL_LENGTH, N_KERNELS), dtype=np.float32)
    for k, taps in enumerate(KERNEL_INDICES):
        weights[taps, k] = 2.0
    return weights


@dataclass(frozen=True, kw_only=True)
class Transform:
    """A fitted MiniRocket transform (aeon's ``parameters`` with names), for (T, C) windows."""

    steps: int
    channels: int
    dilations: np.ndarray  # (D,) int
    features_per_dilation: np.ndarray  # (D,) int
    channels_per_combination: np.ndarray  # (D * 84,) int
    channel_indices: np.ndarray  # concatenated channel lists of the combinations
    biases: np.ndarray  # (F,) float32, aeon's feature order

    @property
    def n_features(self) -> int:
        return int(N_KERNELS * self.features_per_dilation.sum())

    def combination_channels(self) -> list[np.ndarray]:
        """The channels each (dilation, kernel) combination sums, in aeon's order."""
        ends = np.cumsum(self.channels_per_combination)
        starts = ends - self.channels_per_combination
        return [self.channel_indices[s:e] for s, e in zip(starts, ends, strict=True)]

    def valid_only(self, dilation_index: int) -> np.ndarray:
        """(84,) bool: kernels whose features count only the unpadded positions."""
        return (dilation_index + np.arange(N_KERNELS)) % 2 == 1

    def feature_order(self) -> np.ndarray:
        """aeon's feature index of each feature the Keras model computes, in model order.

        The model groups each dilation's features by padding ("same" kernels, then "valid"
        kernels); ``model_features[:, i]`` equals ``aeon_features[:, order[i]]``.
        """
        order: list[np.ndarray] = []
        start = 0
        for j, n_f in enumerate(self.features_per_dilation):
            index = start + np.arange(N_KERNELS * n_f).reshape(N_KERNELS, n_f)
            valid = self.valid_only(j)
            order += [index[~valid].ravel(), index[valid].ravel()]
            start += N_KERNELS * int(n_f)
        return np.concatenate(order)


def fit_minirocket(x: np.ndarray, *, n_features: int, seed: int) -> tuple[Transform, Any]:
    """Fit aeon's MiniRocket on windows ``x`` (N, T, C): its parameters as a
    :class:`Transform`, and the fitted aeon transformer (to compute features in the trainer),
    both with the biases raised by :data:`TIE_MARGIN`."""
    try:
        from aeon.transformations.collection.convolution_based import MiniRocket
    except ModuleNotFoundError as exc:
        msg = "--arch minirocket needs aeon: pip install 'edgeinfer[trainer]'"
        raise TrainerConfigError(msg) from exc
    _, steps, channels = x.shape
    if steps < KERNEL_LENGTH:
        msg = f"--arch minirocket needs windows of at least {KERNEL_LENGTH} steps, got {steps}"
        raise TrainerConfigError(msg)
    fitted = MiniRocket(n_kernels=n_features, random_state=seed, n_jobs=1)
    fitted.fit(_aeon_layout(x))
    per_comb, indices, dilations, per_dilation, biases = fitted.parameters
    biases = (biases + TIE_MARGIN * (1.0 + np.abs(biases))).astype(np.float32)
    fitted.parameters = (per_comb, indices, dilations, per_dilation, biases)
    transform = Transform(
        steps=int(steps),
        channels=int(channels),
        dilations=np.asarray(dilations, dtype=np.int64),
        features_per_dilation=np.asarray(per_dilation, dtype=np.int64),
        channels_per_combination=np.asarray(per_comb, dtype=np.int64),
        channel_indices=np.asarray(indices, dtype=np.int64),
        biases=np.asarray(biases, dtype=np.float32),
    )
    return transform, fitted


def fit_transform_parameters(x: np.ndarray, *, n_features: int, seed: int) -> Transform:
    """Fit MiniRocket's dilations, channel choices and biases on windows ``x`` (N, T, C)."""
    return fit_minirocket(x, n_features=n_features, seed=seed)[0]


def _aeon_layout(x: np.ndarray) -> np.ndarray:
    """(N, T, C) windows as aeon takes them: (N, C, T) float32."""
    return np.ascontiguousarray(np.transpose(x, (0, 2, 1)), dtype=np.float32)


def conv_kernels(transform: Transform) -> list[np.ndarray]:
    """Per dilation, the (9, C, 84) Conv1D kernel: each kernel reads its combination's
    channels (univariate: the one channel)."""
    base = kernel_weights()
    combos = transform.combination_channels()
    kernels: list[np.ndarray] = []
    for j in range(len(transform.dilations)):
        kernel = np.zeros((KERNEL_LENGTH, transform.channels, N_KERNELS), dtype=np.float32)
        for k in range(N_KERNELS):
            channels = combos[j * N_KERNELS + k] if transform.channels > 1 else np.array([0])
            kernel[:, channels, k] = base[:, k : k + 1]
        kernels.append(kernel)
    return kernels


def build_features(inputs: Any, transform: Transform) -> Any:
    """The transform as Keras layers on ``inputs`` (B, T, C): features (B, F) in model order
    (:meth:`Transform.feature_order`). Weights are set and not trainable."""
    import keras

    from trainer.layers import ProportionPositive

    outputs = []
    start = 0
    for j, (dilation, kernel) in enumerate(
        zip(transform.dilations, conv_kernels(transform), strict=True)
    ):
        n_f = int(transform.features_per_dilation[j])
        biases = transform.biases[start : start + N_KERNELS * n_f].reshape(N_KERNELS, n_f)
        start += N_KERNELS * n_f
        valid = transform.valid_only(j)
        for padding, chosen in (("same", ~valid), ("valid", valid)):
            conv = keras.layers.Conv1D(
                int(chosen.sum()), KERNEL_LENGTH, dilation_rate=int(dilation), padding=padding,
                use_bias=False, trainable=False, name=f"mr_conv_d{dilation}_{padding}",
            )  # fmt: skip
            ppv = ProportionPositive(biases[chosen], name=f"mr_ppv_d{dilation}_{padding}")
            outputs.append(ppv(conv(inputs)))
            conv.set_weights([kernel[:, :, chosen]])
    return keras.layers.Concatenate(name="mr_features")(outputs)


@dataclass(frozen=True, kw_only=True)
class Head:
    """The classifier on model-order features f: logits = ((f - mean) * scale) @ kernel + bias."""

    mean: np.ndarray  # (F,)
    scale: np.ndarray  # (F,)
    kernel: np.ndarray  # (F, classes)
    bias: np.ndarray  # (classes,)
    alpha: float
    temperature: float


def fit_head(features: np.ndarray, y: np.ndarray, num_classes: int) -> Head:
    """aeon's head (feature scaler, ``RidgeClassifierCV``), logits scaled by the temperature
    that best fits the leave-one-out ridge scores."""
    from sklearn.linear_model import RidgeClassifierCV
    from sklearn.preprocessing import StandardScaler

    present = np.unique(y)
    if len(present) < 2:
        msg = "--arch minirocket needs at least two classes in the training split"
        raise TrainerConfigError(msg)
    scaler = StandardScaler().fit(features)
    spread = np.asarray(scaler.scale_, dtype=np.float64)  # 1 for a constant feature
    spread = np.maximum(spread, MIN_SCALE_OF_MEDIAN * float(np.median(spread)))
    mean = np.asarray(scaler.mean_, dtype=np.float64)
    ridge = RidgeClassifierCV(alphas=RIDGE_ALPHAS, store_cv_results=True)
    ridge.fit((features - mean) / spread, y)
    coef = np.atleast_2d(ridge.coef_).astype(np.float64)
    intercept = np.atleast_1d(ridge.intercept_).astype(np.float64)
    # Leave-one-out decision scores at the chosen alpha (RidgeCV's exact shortcut).
    chosen = int(np.argmin(np.abs(RIDGE_ALPHAS - ridge.alpha_)))
    loo = np.asarray(ridge.cv_results_)[..., chosen].reshape(len(y), -1)
    classes = np.asarray(ridge.classes_, dtype=np.int64)
    if len(classes) == 2:  # one score s: logits (-s/2, s/2) give softmax = sigmoid(s)
        coef = np.concatenate([-coef / 2, coef / 2])
        intercept = np.concatenate([-intercept / 2, intercept / 2])
        loo = np.concatenate([-loo / 2, loo / 2], axis=1)
    temperature = _fit_temperature(loo, np.searchsorted(classes, y))
    kernel = np.zeros((features.shape[1], num_classes))
    bias = np.full(num_classes, -1e4)  # a class absent from training is never predicted
    kernel[:, classes] = coef.T * temperature
    bias[classes] = intercept * temperature
    return Head(
        mean=mean.astype(np.float32),
        scale=(1.0 / spread).astype(np.float32),
        kernel=kernel.astype(np.float32),
        bias=bias.astype(np.float32),
        alpha=float(ridge.alpha_),
        temperature=temperature,
    )


def _fit_temperature(scores: np.ndarray, y: np.ndarray) -> float:
    """The factor on ``scores`` minimizing the softmax cross-entropy of ``y`` (1-100)."""
    from scipy.optimize import minimize_scalar

    def nll(t: float) -> float:
        z = scores * t
        z = z - z.max(axis=1, keepdims=True)
        log_p = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return float(-log_p[np.arange(len(y)), y].mean())

    return float(minimize_scalar(nll, bounds=(1.0, 100.0), method="bounded").x)


def build_model(transform: Transform, head: Head, *, name: str = "minirocket_classifier") -> Any:
    """Input (T, C) -> MiniRocket features -> standardized -> Dense softmax (``head``)."""
    import keras

    from trainer.layers import Standardize

    inputs = keras.Input(shape=(transform.steps, transform.channels), name="input")
    features = build_features(inputs, transform)
    standardized = Standardize(head.mean, head.scale, name="mr_standardize")(features)
    dense = keras.layers.Dense(
        head.kernel.shape[1], activation="softmax", dtype="float32", name="probabilities"
    )
    outputs = dense(standardized)
    dense.set_weights([head.kernel, head.bias])
    return keras.Model(inputs, outputs, name=name)


def feature_model(model: Any) -> Any:
    """The features (model order) of a model :func:`build_model` made."""
    import keras

    return keras.Model(model.input, model.get_layer("mr_features").output)


def _nll(probabilities: np.ndarray, y: np.ndarray) -> float:
    return float(-np.log(np.clip(probabilities[np.arange(len(y)), y], 1e-12, 1.0)).mean())


@dataclass(frozen=True, kw_only=True)
class FitResult:
    model: Any
    history: dict[str, list[float]]
    seconds: float
    details: dict[str, Any]


def fit(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    *,
    num_classes: int,
    n_features: int = DEFAULT_FEATURES,
    seed: int = 0,
) -> FitResult:
    """Fit on ``x_train``, score on ``x_val``, then fit again on both (the returned model).

    ``history`` has Keras's keys with one entry, so ``--arch auto`` compares it like the
    others: validation accuracy and loss of the first fit. The head is fitted on aeon's
    features (numba, seconds; the Keras graph computes the same features, tested), which
    is 20-50x faster than computing them with TensorFlow.
    """
    started = time.perf_counter()
    first, fitted, head = _fit_once(x_train, y_train, num_classes, n_features=n_features, seed=seed)
    p_train = _probabilities(head, _features(fitted, first, x_train))
    p_val = _probabilities(head, _features(fitted, first, x_val))
    history = {
        "loss": [_nll(p_train, y_train)],
        "accuracy": [float(np.mean(p_train.argmax(1) == y_train))],
        "val_loss": [_nll(p_val, y_val)],
        "val_accuracy": [float(np.mean(p_val.argmax(1) == y_val))],
    }
    transform, _, head = _fit_once(
        np.concatenate([x_train, x_val]),
        np.concatenate([y_train, y_val]),
        num_classes,
        n_features=n_features,
        seed=seed,
    )
    model = build_model(transform, head)
    seconds = time.perf_counter() - started
    details = {
        "features": transform.n_features,
        "ridge_alpha": head.alpha,
        "temperature": round(head.temperature, 4),
        "fitted_on": "train + validation",
    }
    logger.info(
        "minirocket val_accuracy=%.4f val_loss=%.4f features=%d alpha=%.3g seconds=%.1f",
        history["val_accuracy"][0], history["val_loss"][0], details["features"], head.alpha,
        seconds,
    )  # fmt: skip
    return FitResult(model=model, history=history, seconds=seconds, details=details)


def _features(fitted: Any, transform: Transform, x: np.ndarray) -> np.ndarray:
    """aeon's features of ``x`` (N, T, C) in the Keras model's order."""
    features = np.asarray(fitted.transform(_aeon_layout(x)), dtype=np.float32)
    return features[:, transform.feature_order()]


def _probabilities(head: Head, features: np.ndarray) -> np.ndarray:
    z = ((features - head.mean) * head.scale) @ head.kernel + head.bias
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def _fit_once(
    x: np.ndarray, y: np.ndarray, num_classes: int, *, n_features: int, seed: int
) -> tuple[Transform, Any, Head]:
    transform, fitted = fit_minirocket(x, n_features=n_features, seed=seed)
    head = fit_head(_features(fitted, transform, x), y, num_classes)
    return transform, fitted, head
