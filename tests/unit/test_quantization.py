"""Hermetic quantization tests: every architecture x every variant on tiny synthetic data.

Each test converts a tiny trained model, runs it in LiteRT (ai-edge-litert, the agent's
runtime), and checks dtypes, that it invokes with a resized batch, that its ops are
builtin, and that it predicts what the Keras model predicts on most samples.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("tensorflow")
keras = pytest.importorskip("keras")

from stream.bundle import VARIANTS  # noqa: E402
from trainer.evaluate import run_litert  # noqa: E402
from trainer.exceptions import ExportError, QuantizationError  # noqa: E402
from trainer.export import convert  # noqa: E402
from trainer.models import ModelConfig, build_model, export_clone  # noqa: E402
from trainer.quantization import QuantizationConfig  # noqa: E402

N_CLASSES = 3
TINY: dict[str, ModelConfig] = {
    "cnn": ModelConfig(arch="cnn", filters=(4, 8), units=8, dropout=0.0),
    "conv1d": ModelConfig(arch="conv1d", filters=(8, 8), dropout=0.0),
    "lstm": ModelConfig(arch="lstm", filters=(8,), units=8, conv_stride=2, dropout=0.0),
    "gru": ModelConfig(arch="gru", filters=(8,), units=8, conv_stride=2, dropout=0.0),
}


def synthetic(arch: str, n: int = 90, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Separable classes: bright image quadrant per class; a sine frequency per class."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % N_CLASSES
    if arch == "cnn":
        x = rng.normal(0, 0.3, size=(n, 8, 8, 1))
        for i, c in enumerate(y):
            x[i, (c % 2) * 4 : (c % 2) * 4 + 4, (c // 2) * 4 : (c // 2) * 4 + 4, 0] += 2.0
    else:
        t = np.linspace(0, 1, 16)
        x = rng.normal(0, 0.2, size=(n, 16, 3))
        for i, c in enumerate(y):
            x[i, :, 0] += np.sin(2 * np.pi * (c + 1) * t + rng.uniform(0, 0.5))
            x[i, :, 1] += 0.5 * c
    return x.astype(np.float32), y.astype(np.int64)


@pytest.fixture(scope="module")
def tiny_models() -> dict[str, tuple[Any, np.ndarray, np.ndarray]]:
    keras.utils.set_random_seed(0)
    out = {}
    for arch, cfg in TINY.items():
        x, y = synthetic(arch)
        model = build_model(cfg, tuple(x.shape[1:]), N_CLASSES)
        model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
        model.fit(x, y, epochs=15, batch_size=16, verbose=0)
        out[arch] = (model, x, y)
    return out


@pytest.mark.parametrize("variant", VARIANTS)
@pytest.mark.parametrize("arch", list(TINY))
def test_variant_converts_runs_and_agrees(
    tiny_models: dict[str, tuple[Any, np.ndarray, np.ndarray]], arch: str, variant: str
) -> None:
    model, x, y = tiny_models[arch]
    config = QuantizationConfig.for_variant(variant, x)
    blob = convert(model, config)
    result = run_litert(blob, x)  # resizes the batch to 64 and to 1: must work

    expected = "int8" if variant == "int8" else "float32"
    assert result["input"]["dtype"] == expected
    assert result["output"]["dtype"] == expected
    assert result["input"]["shape"][0] is None
    if variant == "int8":
        assert result["input"]["scale"] > 0 and result["output"]["scale"] > 0
    assert result["resizable_batch"] is True
    assert not [op for op in result["ops"] if op.startswith("Flex") or op == "WHILE"]

    keras_pred = model.predict(x, verbose=0).argmax(axis=1)
    assert (keras_pred == y).mean() > 0.8, "the tiny model should have learned the classes"
    litert_pred = np.asarray(result["probabilities"]).argmax(axis=1)
    agreement = float((litert_pred == keras_pred).mean())
    assert agreement >= (0.99 if variant in ("float32", "float16") else 0.9), agreement


def test_int8_is_smaller_than_float32_for_a_cnn_with_real_weights() -> None:
    cfg = ModelConfig(arch="cnn", filters=(32, 64), units=64)
    model = build_model(cfg, (8, 8, 1), N_CLASSES)
    x, _ = synthetic("cnn", n=30)
    f32 = convert(model, QuantizationConfig.for_float32())
    i8 = convert(model, QuantizationConfig.for_int8(x))
    assert len(f32) >= 100_000
    assert len(i8) <= 0.35 * len(f32)


def test_strip_strings_shrinks_unrolled_rnn() -> None:
    from dataclasses import replace

    model = build_model(TINY["gru"], (16, 3), N_CLASSES)
    kept = convert(model, replace(QuantizationConfig.for_float32(), strip_strings=False))
    stripped = convert(model, QuantizationConfig.for_float32())
    assert len(stripped) < len(kept)


def test_apply_sets_the_int8_converter_fields() -> None:
    import tensorflow as tf

    model = build_model(TINY["cnn"], (8, 8, 1), N_CLASSES)
    x, _ = synthetic("cnn", n=5)
    converter = QuantizationConfig.for_int8(x).apply(
        tf.lite.TFLiteConverter.from_keras_model(model)
    )
    assert converter.inference_input_type == tf.int8
    assert converter.inference_output_type == tf.int8
    assert converter.optimizations == [tf.lite.Optimize.DEFAULT]
    assert list(converter.target_spec.supported_ops) == [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    samples = list(converter.representative_dataset())
    assert len(samples) == 5 and samples[0][0].shape == (1, 8, 8, 1)


def test_float16_preset_sets_supported_types() -> None:
    import tensorflow as tf

    model = build_model(TINY["cnn"], (8, 8, 1), N_CLASSES)
    converter = QuantizationConfig.for_float16().apply(
        tf.lite.TFLiteConverter.from_keras_model(model)
    )
    assert list(converter.target_spec.supported_types) == [tf.float16]


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda: QuantizationConfig.for_int8(None), "needs representative data"),
        (
            lambda: QuantizationConfig.for_int8(np.zeros((0, 8, 8, 1), np.float32)),
            "needs representative data",
        ),
        (
            lambda: QuantizationConfig.for_int8(np.zeros((4, 8, 8, 1), np.uint8)),
            "must be preprocessed float inputs",
        ),
        (
            lambda: QuantizationConfig.for_int8(np.full((4, 8, 8, 1), np.nan, np.float32)),
            "NaN or infinity",
        ),
        (
            lambda: QuantizationConfig.for_int8(
                np.zeros((4, 8, 8, 1), np.float32), num_calibration_samples=0
            ),
            "num_calibration_samples must be >= 1",
        ),
        (lambda: QuantizationConfig.for_variant("int4"), "unknown variant 'int4'"),
        (lambda: QuantizationConfig.for_variant("int8"), "needs representative data"),
    ],
)
def test_bad_quantization_configs_raise_clear_errors(make: Any, message: str) -> None:
    with pytest.raises(QuantizationError, match=message):
        make()


def test_int8_of_a_looping_rnn_is_refused_instead_of_crashing() -> None:
    model = build_model(TINY["lstm"], (16, 3), N_CLASSES, unroll=False)
    x, _ = synthetic("lstm", n=4)
    with pytest.raises(ExportError, match="unroll=False"):
        convert(model, QuantizationConfig.for_int8(x), clone=False)


def test_export_clone_unrolls_and_keeps_weights() -> None:
    model = build_model(TINY["gru"], (16, 3), N_CLASSES)
    clone = export_clone(model)
    assert clone.get_layer("gru").get_config()["unroll"] is True
    assert model.get_layer("gru").get_config()["unroll"] is False
    x, _ = synthetic("gru", n=8)
    np.testing.assert_allclose(
        model.predict(x, verbose=0), clone.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )


def test_a_mixed_precision_model_exports_as_float32() -> None:
    """The GPU path trains in mixed_float16; the exported clone must be float32."""
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        model = build_model(TINY["gru"], (16, 3), N_CLASSES)
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert model.get_layer("gru").compute_dtype == "float16"
    assert model.get_layer("probabilities").compute_dtype == "float32"
    clone = export_clone(model)
    assert {layer.compute_dtype for layer in clone.layers} == {"float32"}
    x, _ = synthetic("gru", n=8)
    result = run_litert(convert(model, QuantizationConfig.for_int8(x)), x)
    assert result["input"]["dtype"] == "int8"
