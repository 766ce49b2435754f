"""The int8-loop variant of recurrent models (trainer/recurrent.py): a LiteRT WHILE loop whose
matmuls are static int8 (ai-edge-quantizer). Hermetic: tiny models, converted and run in
ai-edge-litert, the agent's runtime."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_quantizer")
keras = pytest.importorskip("keras")

from tests.unit.test_quantization import N_CLASSES, TINY, synthetic  # noqa: E402
from trainer.evaluate import run_litert  # noqa: E402
from trainer.exceptions import ExportError, QuantizationError  # noqa: E402
from trainer.export import convert  # noqa: E402
from trainer.models import ModelConfig, build_model  # noqa: E402
from trainer.quantization import EXPORT_VARIANTS, QuantizationConfig  # noqa: E402
from trainer.recurrent import has_recurrence, loop_clone  # noqa: E402


@pytest.fixture(scope="module")
def tiny_rnns() -> dict[str, tuple[Any, np.ndarray, np.ndarray]]:
    keras.utils.set_random_seed(0)
    out = {}
    for arch in ("lstm", "gru"):
        x, y = synthetic(arch)
        model = build_model(TINY[arch], tuple(x.shape[1:]), N_CLASSES)
        model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
        model.fit(x, y, epochs=15, batch_size=16, verbose=0)
        out[arch] = (model, x, y)
    return out


@pytest.mark.parametrize("arch", ["lstm", "gru"])
def test_int8_loop_runs_in_litert_as_a_loop_with_int8_matmuls(
    tiny_rnns: dict[str, tuple[Any, np.ndarray, np.ndarray]], arch: str
) -> None:
    model, x, y = tiny_rnns[arch]
    blob = convert(model, QuantizationConfig.for_int8_loop(x))
    result = run_litert(blob, x, latency_budget_s=0.2)

    assert "WHILE" in result["ops"]
    assert {"QUANTIZE", "DEQUANTIZE", "FULLY_CONNECTED"} <= set(result["ops"])
    assert not [op for op in result["ops"] if op.startswith("Flex")]
    # Float at the edges (the agent feeds float windows), a fixed batch of one.
    assert result["input"]["dtype"] == result["output"]["dtype"] == "float32"
    assert result["resizable_batch"] is False
    keras_pred = model.predict(x, verbose=0).argmax(axis=1)
    assert (keras_pred == y).mean() > 0.8, "the tiny model should have learned the classes"
    litert_pred = np.asarray(result["probabilities"]).argmax(axis=1)
    assert (litert_pred == keras_pred).mean() >= 0.9


def test_int8_loop_is_under_half_of_unrolled_float32_at_default_size() -> None:
    """The default GRU on the basic-motions shape (100 steps x 6 channels, 32 units), the
    model whose unrolled int8 file was larger than its float32 file (117 KB vs 86 KB; the
    unrolled int8 conversion is left out here: it alone takes ~15 s)."""
    model = build_model(ModelConfig(arch="gru"), (100, 6), 4)
    x = np.random.default_rng(0).normal(size=(20, 100, 6)).astype(np.float32)
    f32 = convert(model, QuantizationConfig.for_float32())
    loop = convert(model, QuantizationConfig.for_int8_loop(x))
    assert len(f32) > 80_000  # the unrolled file this variant replaces
    assert len(loop) < 0.5 * len(f32), (len(loop), len(f32))


def test_int8_loop_of_a_model_without_recurrence_is_refused() -> None:
    model = build_model(TINY["conv1d"], (16, 3), N_CLASSES)
    x, _ = synthetic("conv1d", n=4)
    assert not has_recurrence(model)
    with pytest.raises(ExportError, match="int8-loop variant is for recurrent models"):
        convert(model, QuantizationConfig.for_int8_loop(x))


def test_int8_loop_needs_calibration_data() -> None:
    with pytest.raises(QuantizationError, match="int8-loop quantization needs representative"):
        QuantizationConfig.for_int8_loop(None)
    assert QuantizationConfig.for_variant("int8-loop", np.zeros((2, 4, 1), np.float32)).calibrated
    assert "int8-loop" in EXPORT_VARIANTS


def test_loop_clone_keeps_weights_and_fixes_the_batch() -> None:
    model = build_model(TINY["gru"], (16, 3), N_CLASSES)
    clone = loop_clone(model)
    assert clone.get_layer("gru").get_config()["unroll"] is False
    assert clone.input_shape == (1, 16, 3)
    x, _ = synthetic("gru", n=1)
    np.testing.assert_allclose(
        model.predict(x, verbose=0), clone.predict(x, verbose=0), rtol=1e-5, atol=1e-6
    )
