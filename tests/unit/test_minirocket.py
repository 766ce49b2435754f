"""``--arch minirocket``: the Keras graph computes aeon's MiniRocket features, and the fitted
model trains, exports and runs in LiteRT as accurately as aeon's classifier."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stream.datasets import load_dataset
from trainer.minirocket import KERNEL_INDICES, N_KERNELS, Transform, kernel_weights

pytest.importorskip("tensorflow")


def test_the_84_kernels_are_minirockets() -> None:
    weights = kernel_weights()
    assert weights.shape == (9, N_KERNELS) == (9, 84)
    assert np.all(weights.sum(axis=0) == 0)  # six -1 and three 2 per kernel
    assert np.all((weights == 2).sum(axis=0) == 3)
    assert np.array_equal(np.flatnonzero(weights[:, 5] == 2), KERNEL_INDICES[5])


def test_feature_order_maps_every_model_feature_to_one_aeon_feature() -> None:
    transform = Transform(
        steps=40, channels=1, dilations=np.array([1, 2, 4]),
        features_per_dilation=np.array([3, 2, 1]),
        channels_per_combination=np.ones(3 * N_KERNELS, np.int64),
        channel_indices=np.zeros(3 * N_KERNELS, np.int64),
        biases=np.zeros(6 * N_KERNELS, np.float32),
    )  # fmt: skip
    order = transform.feature_order()
    assert np.array_equal(np.sort(order), np.arange(transform.n_features))
    # dilation 1 (index 0): the even kernels count every position and come first
    assert list(order[:6]) == [0, 1, 2, 6, 7, 8]
    assert list(transform.valid_only(1)[:3]) == [True, False, True]


def test_the_head_is_a_ridge_classifier_with_a_floored_scale() -> None:
    from sklearn.linear_model import RidgeClassifierCV

    from trainer.minirocket import RIDGE_ALPHAS, fit_head

    rng = np.random.default_rng(0)
    y = np.arange(60) % 3
    features = rng.random((60, 40)) + 0.3 * y[:, None] * (np.arange(40) < 5)
    features[:, 10:15] = 0.5 + 1e-4 * rng.random((60, 5))  # near-constant features
    head = fit_head(features, y, num_classes=4)  # class 3 has no training sample
    spread = features.std(axis=0)
    assert head.scale.max() <= 1 / (0.5 * np.median(spread)) * 1.0001
    assert np.allclose(head.scale[20:], 1 / spread[20:], rtol=1e-4)  # typical: aeon's scaler
    assert 1.0 <= head.temperature <= 100.0
    logits = ((features - head.mean) * head.scale) @ head.kernel + head.bias
    floor = np.maximum(spread, 0.5 * np.median(spread))
    ridge = RidgeClassifierCV(alphas=RIDGE_ALPHAS).fit((features - features.mean(0)) / floor, y)
    assert np.array_equal(logits.argmax(1), ridge.predict((features - features.mean(0)) / floor))
    assert not (logits.argmax(1) == 3).any()


def test_ppv_is_the_share_of_steps_above_each_bias() -> None:
    from trainer.layers import ProportionPositive

    rng = np.random.default_rng(0)
    x = rng.normal(size=(3, 50, 4)).astype(np.float32)
    biases = rng.normal(size=(4, 5)).astype(np.float32)
    expected = (x[..., None] > biases[None, None]).mean(axis=1).reshape(3, 20)
    layer = ProportionPositive(biases)
    assert np.allclose(np.asarray(layer(x)), expected, atol=1e-6)
    # a long window is compared in chunks of biases; the result is the same
    long = rng.normal(size=(2, 5000, 4)).astype(np.float32)
    wanted = (long[..., None] > biases[None, None]).mean(axis=1).reshape(2, 20)
    assert np.allclose(np.asarray(layer(long)), wanted, atol=1e-6)
    clone = ProportionPositive.from_config(layer.get_config())
    clone.build((None, 50, 4))
    assert clone.get_config()["shape"] == (4, 5) and not clone.trainable


def test_standardize_centres_and_scales_each_feature() -> None:
    from trainer.layers import Standardize

    x = np.array([[1.0, 2.0, 3.0], [3.0, 2.0, 1.0]], np.float32)
    layer = Standardize(np.array([2.0, 2.0, 0.0]), np.array([0.5, 1.0, 10.0]))
    assert np.allclose(np.asarray(layer(x)), [[-0.5, 0.0, 30.0], [0.5, 0.0, 10.0]])
    assert Standardize.from_config(layer.get_config()).size == 3


@pytest.mark.slow  # numba compiles aeon's MiniRocket on first use (1-3 min on 2 cores)
@pytest.mark.parametrize("name", ["GunPoint", "BasicMotions", "ACSF1"])
def test_keras_features_equal_aeons_transform(name: str) -> None:
    from trainer.minirocket import build_model, feature_model, fit_head, fit_minirocket

    ds = load_dataset(f"aeon:{name}")
    x_fit = ds.x_train.astype(np.float32)
    transform, aeon = fit_minirocket(x_fit, n_features=1000, seed=0)
    head = fit_head(np.random.default_rng(0).random((len(x_fit), transform.n_features)),
                    ds.y_train, ds.num_classes)  # fmt: skip
    model = build_model(transform, head)
    x_test = ds.x_test[:40]  # ACSF1: 1,460 steps per window
    ours = feature_model(model).predict(x_test, verbose=0)
    # aeon's own transform with the same parameters (biases raised by TIE_MARGIN)
    assert np.array_equal(aeon.parameters[4], transform.biases)
    theirs = aeon.transform(np.transpose(x_test, (0, 2, 1)).astype(np.float32))
    theirs = np.asarray(theirs)[:, transform.feature_order()]
    assert ours.shape == theirs.shape == (len(x_test), 84 * (1000 // 84))
    # Float sums in another order flip the odd position whose output equals a bias exactly.
    differ = np.abs(ours - theirs) > 1e-6
    assert differ.mean() < 1e-3, f"{differ.sum()} of {differ.size} features differ"
    assert np.abs(ours - theirs).mean() < 1e-4


@pytest.mark.slow
def test_minirocket_trains_exports_and_runs_in_litert_like_aeons(tmp_path: Path) -> None:
    """ItalyPowerDemand (24 steps, 67 training series): the LiteRT float32 model scores
    within 2 points of aeon's MiniRocketClassifier on the same split, and the saved model
    reloads to the same predictions."""
    from trainer.baseline import run_baseline
    from trainer.models import ModelConfig
    from trainer.train import export_bundles, load_trained, train

    result = train(
        "aeon:ItalyPowerDemand", ModelConfig(arch="minirocket"), out_dir=tmp_path, verbose=0
    )
    assert result.config.features == 10_000 and result.extra["epochs_run"] == 1
    report = export_bundles(result, name="italy", version="1", variants=("float32", "int8"))
    baseline = run_baseline("minirocket", result.dataset, seed=0)
    assert baseline is not None
    litert = report["variants"]["float32"]
    assert litert.get("error") is None, litert
    assert litert["accuracy"] >= baseline["accuracy"] - 0.02, (litert, baseline)
    assert abs(litert["accuracy"] - report["keras"]["accuracy"]) <= 0.005
    assert set(litert["ops"]) <= {
        "CONV_2D", "GREATER", "CAST", "MEAN", "RESHAPE", "CONCATENATION", "FULLY_CONNECTED",
        "SOFTMAX", "EXPAND_DIMS", "TRANSPOSE", "SUB", "MUL",
        "SPACE_TO_BATCH_ND", "BATCH_TO_SPACE_ND",  # how TensorFlow lowers some dilations
    }, litert["ops"]  # fmt: skip
    int8 = report["variants"]["int8"]
    assert int8.get("error") is None and int8["accuracy"] >= baseline["accuracy"] - 0.05, int8
    reloaded = load_trained(tmp_path / "model.keras")
    assert reloaded.config.arch == "minirocket"
    x = result.data.x_test[:32]
    assert np.allclose(reloaded.model.predict(x, verbose=0), result.model.predict(x, verbose=0))
    run = json.loads((tmp_path / "run.json").read_text())
    assert run["model_config"]["arch"] == "minirocket"
