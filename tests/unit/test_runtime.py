"""The LiteRT runtime on tiny real models: every variant, batching, int8, copies, errors.

Hermetic (STYLE.md): each model is built and converted here with TensorFlow (tests may
import it; the agent never does), then run through :mod:`edge_agent.runtime`.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_agent.exceptions import AgentConfigError, ModelLoadError
from edge_agent.runtime import (
    InterpreterRuntime,
    _Backend,
    check_against_manifest,
    load_runtime,
    select_backend,
)
from stream.bundle import Manifest, TensorSpec
from stream.exceptions import DecodeError
from stream.preprocessing import ImagePreprocessing, dequantize, quantize

VARIANTS = ("float32", "float16", "dynamic", "int8")
REPO = Path(__file__).resolve().parents[2]


def _convert(model: Any, variant: str, rep: np.ndarray) -> bytes:
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if variant == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif variant == "dynamic":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
    elif variant == "int8":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([r[None]] for r in rep[:32])
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
    return bytes(conv.convert())


@pytest.fixture(scope="module")
def tiny() -> dict[str, Any]:
    """A tiny 8x8 CNN in the four variants, and a fixed-batch unrolled LSTM (float, int8)."""
    keras = pytest.importorskip("keras")
    rng = np.random.default_rng(0)
    x = rng.random((64, 8, 8, 1), dtype=np.float32)
    keras.utils.set_random_seed(0)
    cnn = keras.Sequential(
        [
            keras.Input((8, 8, 1)),
            keras.layers.Conv2D(4, 3, activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(5, activation="softmax"),
        ]
    )
    seq = rng.standard_normal((32, 10, 3)).astype(np.float32)
    lstm = keras.Sequential(
        [
            keras.Input((10, 3), batch_size=1),
            keras.layers.LSTM(4, unroll=True),
            keras.layers.Dense(3, activation="softmax"),
        ]
    )
    return {
        "x": x,
        "cnn": cnn,
        "models": {v: _convert(cnn, v, x) for v in VARIANTS},
        "seq": seq,
        "fixed": {v: _convert(lstm, v, seq) for v in ("float32", "int8")},
        "fixed_keras": lstm,
    }


@pytest.mark.parametrize("variant", VARIANTS)
def test_every_variant_runs_and_matches_keras(tiny: dict[str, Any], variant: str) -> None:
    runtime = load_runtime(model_content=tiny["models"][variant])
    x = tiny["x"][:16]
    y = runtime.run(x)
    assert runtime.name == "ai_edge_litert"
    assert runtime.batchable is True
    assert runtime.uses_default_delegates is True
    assert y.dtype == np.float32 and y.shape == (16, 5)
    expected = np.asarray(tiny["cnn"](x))
    tolerance = 0.05 if variant == "int8" else 0.02
    assert np.abs(y - expected).max() < tolerance
    assert runtime.input_spec.shape == [None, 8, 8, 1]
    assert runtime.input_spec.dtype == ("int8" if variant == "int8" else "float32")


@pytest.mark.parametrize("variant", VARIANTS)
def test_batch_and_per_sample_outputs_match(tiny: dict[str, Any], variant: str) -> None:
    runtime = load_runtime(model_content=tiny["models"][variant], num_threads=2)
    x = tiny["x"][:7]
    batched = runtime.run(x)
    single = np.concatenate([runtime.run(x[i : i + 1]) for i in range(len(x))])
    again = runtime.run(x[:3])  # another batch size: one more resize, same answers
    assert np.allclose(batched, single, atol=1e-6)
    assert np.allclose(again, batched[:3], atol=1e-6)
    assert runtime.run(x[:0]).shape == (0, 5)


def test_int8_input_is_quantized_and_output_dequantized_with_the_tensor_params(
    tiny: dict[str, Any],
) -> None:
    from ai_edge_litert.interpreter import Interpreter

    model = tiny["models"]["int8"]
    runtime = load_runtime(model_content=model)
    inp, out = runtime.input_spec, runtime.output_spec
    assert inp.dtype == "int8" and inp.scale > 0
    assert out.dtype == "int8" and out.scale > 0
    x = tiny["x"][:4]

    raw = Interpreter(model_content=model)
    detail, out_detail = raw.get_input_details()[0], raw.get_output_details()[0]
    raw.resize_tensor_input(detail["index"], [4, 8, 8, 1])
    raw.allocate_tensors()
    scale, zero_point = detail["quantization"]
    raw.set_tensor(detail["index"], quantize(x, scale, zero_point, "int8"))
    raw.invoke()
    q = raw.get_tensor(out_detail["index"])
    assert q.dtype == np.int8
    expected = (q.astype(np.float32) - out_detail["quantization"][1]) * out_detail["quantization"][
        0
    ]

    y = runtime.run(x)
    assert np.array_equal(y, expected.astype(np.float32))
    assert np.array_equal(y, dequantize(q, out.scale, out.zero_point))
    # softmax scores survive the round trip: they sum to ~1 within int8 resolution
    assert np.allclose(y.sum(axis=1), 1.0, atol=5 * out.scale)


def test_outputs_are_copies_not_views_into_the_interpreter(tiny: dict[str, Any]) -> None:
    for variant in ("float32", "int8"):
        runtime = load_runtime(model_content=tiny["models"][variant])
        x = tiny["x"]
        first = runtime.run(x[:2])
        kept = first.copy()
        runtime.run(x[10:12])  # same batch size: same output buffer inside the interpreter
        assert np.array_equal(first, kept), variant
        assert first.flags.owndata or first.base is None or first.base.flags.owndata
        first[:] = -1  # writable, and writing does not touch the interpreter
        assert np.allclose(runtime.run(x[:2]), kept)


def _pixels(n: int, seed: int = 3) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, size=(n, 8, 8, 1), dtype=np.uint8)


def _image_table(runtime: Any, prep: ImagePreprocessing) -> np.ndarray:
    spec = runtime.input_spec
    if spec.quantized:
        return prep.quantization_table(spec.scale, spec.zero_point, spec.dtype)
    table = prep.pixel_table()
    assert table is not None
    return table


@pytest.mark.parametrize("variant", VARIANTS)
def test_run_filled_writes_the_input_tensor_and_equals_run(
    tiny: dict[str, Any], variant: str
) -> None:
    """The agent's image path: pixels looked up straight into the interpreter's input
    tensor give exactly the scores of the normalized batch through run()."""
    runtime = load_runtime(model_content=tiny["models"][variant])
    prep = ImagePreprocessing(height=8, width=8, channels=1, mean=[0.2], std=[0.6])
    table = _image_table(runtime, prep)
    for n in (7, 7, 2, 1):  # same size twice (no resize), then two resizes
        pixels = _pixels(n, seed=n)
        seen: list[tuple[int, ...]] = []

        def fill(out: np.ndarray, pixels: np.ndarray = pixels, seen: list[Any] = seen) -> None:
            seen.append(out.shape)
            ImagePreprocessing.apply_table(pixels, table, out=out)

        y = runtime.run_filled(n, fill)
        assert seen == [(n, 8, 8, 1)]
        np.testing.assert_array_equal(y, runtime.run(prep.apply(pixels)))
    assert runtime.run_filled(0, lambda out: None).shape == (0, 5)


def test_run_filled_on_a_fixed_batch_model_fills_a_new_array(tiny: dict[str, Any]) -> None:
    seq = tiny["seq"][:5]
    for variant, model in tiny["fixed"].items():
        runtime = load_runtime(model_content=model)
        assert runtime.batchable is False

        spec = runtime.input_spec
        batch = quantize(seq, spec.scale, spec.zero_point, spec.dtype) if spec.quantized else seq

        def fill(out: np.ndarray, batch: np.ndarray = batch) -> None:
            assert out.shape == (5, 10, 3) and out.dtype == batch.dtype
            out[:] = batch

        np.testing.assert_array_equal(runtime.run_filled(5, fill), runtime.run(seq), variant)


def test_a_failing_fill_leaves_the_runtime_usable(tiny: dict[str, Any]) -> None:
    """A fill that raises keeps a view of the input tensor in its traceback; the agent
    retries the batch one input at a time while that exception is still being handled, so
    the view must not block the next invoke."""
    runtime = load_runtime(model_content=tiny["models"]["float32"])
    prep = ImagePreprocessing(height=8, width=8, channels=1)
    table = _image_table(runtime, prep)
    pixels = _pixels(3)

    def broken(out: np.ndarray) -> None:
        held = out.reshape(-1)  # noqa: F841  a local view, alive in the traceback
        raise ValueError("broken fill")

    def fill(out: np.ndarray) -> None:
        ImagePreprocessing.apply_table(pixels, table, out=out)

    try:
        runtime.run_filled(3, broken)
    except ValueError:
        y = runtime.run_filled(3, fill)  # inside the handler: the traceback is alive
    else:
        pytest.fail("the fill's error was swallowed")
    np.testing.assert_array_equal(y, runtime.run(prep.apply(pixels)))


def test_a_fill_that_keeps_the_tensor_is_refused_not_corrupted(tiny: dict[str, Any]) -> None:
    """LiteRT will not invoke while a view of its buffers lives: a fill that keeps one
    gets an error (the agent retries, then dead-letters with the reason) and the next
    batch runs normally once it is gone."""
    runtime = load_runtime(model_content=tiny["models"]["int8"])
    kept: list[np.ndarray] = []
    with pytest.raises(RuntimeError, match="reference"):
        runtime.run_filled(2, kept.append)
    kept.clear()
    pixels = _pixels(2)
    prep = ImagePreprocessing(height=8, width=8, channels=1)
    table = _image_table(runtime, prep)
    y = runtime.run_filled(2, lambda out: ImagePreprocessing.apply_table(pixels, table, out=out))
    np.testing.assert_array_equal(y, runtime.run(prep.apply(pixels)))


def _count_reallocations(interp: Any) -> dict[str, int]:
    """Count the interpreter's allocate_tensors/resize_tensor_input calls from now on."""
    calls = {"allocate": 0, "resize": 0}
    real_allocate, real_resize = interp.allocate_tensors, interp.resize_tensor_input

    def allocate(*a: Any, **k: Any) -> Any:
        calls["allocate"] += 1
        return real_allocate(*a, **k)

    def resize(*a: Any, **k: Any) -> Any:
        calls["resize"] += 1
        return real_resize(*a, **k)

    interp.allocate_tensors, interp.resize_tensor_input = allocate, resize
    return calls


def test_fixed_batch_model_loops_over_samples_without_reallocating(
    tiny: dict[str, Any],
) -> None:
    seq = tiny["seq"]
    expected = np.concatenate([np.asarray(tiny["fixed_keras"](seq[i : i + 1])) for i in range(5)])
    for variant, model in tiny["fixed"].items():
        runtime = load_runtime(model_content=model)
        assert runtime.batchable is False, variant
        calls = _count_reallocations(runtime._interp)  # type: ignore[attr-defined]
        y = runtime.run(seq[:5])
        assert y.shape == (5, 3)
        assert calls == {"allocate": 0, "resize": 0}
        assert np.abs(y - expected).max() < (0.05 if variant == "int8" else 1e-4)
        single = np.concatenate([runtime.run(seq[i : i + 1]) for i in range(5)])
        assert np.allclose(y, single, atol=1e-6)


def test_exactly_one_of_path_and_content(tiny: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "m.tflite"
    path.write_bytes(tiny["models"]["float32"])
    with pytest.raises(ModelLoadError, match="exactly one of model_path or model_content"):
        load_runtime()
    with pytest.raises(ModelLoadError, match="exactly one of model_path or model_content"):
        load_runtime(model_path=path, model_content=path.read_bytes())
    assert load_runtime(model_path=path).run(tiny["x"][:1]).shape == (1, 5)


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"\x00" * 64, "ai_edge_litert cannot parse model bytes"),
        (b"TFL3" + bytes(range(256)) * 4, "not a valid Flatbuffer"),
        (b"", "model_content is empty"),
    ],
)
def test_garbage_bytes_are_a_clear_model_load_error(content: bytes, match: str) -> None:
    with pytest.raises(ModelLoadError, match=match):
        load_runtime(model_content=content)


def test_truncated_file_and_missing_file(tiny: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "cut.tflite"
    path.write_bytes(tiny["models"]["int8"][:300])
    with pytest.raises(ModelLoadError, match=r"cannot parse .*cut\.tflite"):
        load_runtime(model_path=path)
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_runtime(model_path=tmp_path / "nope.tflite")


@pytest.mark.parametrize("threads", [0, -1, 1.5, True])
def test_thread_count_is_validated(tiny: dict[str, Any], threads: Any) -> None:
    with pytest.raises(AgentConfigError, match="num_threads must be an integer >= 1"):
        load_runtime(model_content=tiny["models"]["float32"], num_threads=threads)


def test_wrong_input_shape_is_a_decode_error(tiny: dict[str, Any]) -> None:
    runtime = load_runtime(model_content=tiny["models"]["float32"])
    with pytest.raises(DecodeError, match=r"model input must be shaped \(N, 8, 8, 1\)") as err:
        runtime.run(np.zeros((2, 8, 8, 3), np.float32))
    assert err.value.reason == "wrong_shape"


class _XnnpackFailsInterpreter:
    """The real LiteRT interpreter, except that with the default delegates (XNNPACK) the
    first invoke fails the way an int8 unrolled LSTM did here."""

    instances: list[str] = []

    def __init__(self, **kwargs: Any) -> None:
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        resolver = kwargs.get("experimental_op_resolver_type", OpResolverType.AUTO)
        self.default_delegates = resolver != OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        type(self).instances.append("default" if self.default_delegates else "without")
        self._real = Interpreter(**kwargs)

    def invoke(self) -> None:
        if self.default_delegates:
            msg = "failed to create XNNPACK runtimeNode number 12 (TfLiteXNNPackDelegate)"
            raise RuntimeError(msg)
        self._real.invoke()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _xnnpack_fails(model: bytes, *, use_default_delegates: bool) -> InterpreterRuntime:
    """A runtime on :class:`_XnnpackFailsInterpreter` (its instances reset first)."""
    from ai_edge_litert.interpreter import OpResolverType

    _XnnpackFailsInterpreter.instances = []
    backend = _Backend("ai_edge_litert", _XnnpackFailsInterpreter, OpResolverType)
    return InterpreterRuntime(
        backend=backend,
        model_path=None,
        model_content=model,
        num_threads=1,
        use_default_delegates=use_default_delegates,
    )


def test_first_invoke_failure_falls_back_to_no_default_delegates(
    tiny: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level("WARNING", logger="edge_agent.runtime"):
        runtime = _xnnpack_fails(tiny["models"]["int8"], use_default_delegates=True)
    assert runtime.uses_default_delegates is False
    assert _XnnpackFailsInterpreter.instances == ["default", "without"]
    assert "failed its first invoke with the default delegates" in caplog.text
    assert "failed to create XNNPACK runtime" in caplog.text
    y = runtime.run(tiny["x"][:3])
    reference = load_runtime(model_content=tiny["models"]["int8"]).run(tiny["x"][:3])
    assert np.allclose(y, reference, atol=0.02)


def test_manifest_without_default_delegates_is_respected_up_front(tiny: dict[str, Any]) -> None:
    runtime = _xnnpack_fails(tiny["models"]["float32"], use_default_delegates=False)
    assert _XnnpackFailsInterpreter.instances == ["without"]
    assert runtime.uses_default_delegates is False
    assert (
        load_runtime(
            model_content=tiny["models"]["float32"], use_default_delegates=False
        ).uses_default_delegates
        is False
    )


def test_manifest_agreement_check(tiny: dict[str, Any]) -> None:
    runtime = load_runtime(model_content=tiny["models"]["int8"])
    good = Manifest(
        name="tiny",
        version="1",
        variant="int8",
        task="image-classification",
        input=runtime.input_spec,
        output=runtime.output_spec,
        preprocessing=ImagePreprocessing(height=8, width=8, channels=1),
        labels=list("abcde"),
    )
    assert check_against_manifest(runtime, good) == []
    off = TensorSpec(shape=[None, 8, 8, 1], dtype="int8", scale=0.5, zero_point=3)
    warnings = check_against_manifest(runtime, _replace(good, input=off))
    assert len(warnings) == 1 and "using the model's" in warnings[0]
    wrong = TensorSpec(shape=[None, 28, 28, 1], dtype="int8", scale=0.5, zero_point=3)
    with pytest.raises(ModelLoadError, match=r"the model's input is int8 \[None, 8, 8, 1\]"):
        check_against_manifest(runtime, _replace(good, input=wrong))


def _replace(manifest: Manifest, **changes: Any) -> Manifest:
    from dataclasses import replace

    return replace(manifest, **changes)


def test_backend_selection_never_imports_tensorflow() -> None:
    code = textwrap.dedent(
        """
        import sys
        from edge_agent.runtime import select_backend
        print(select_backend().name, "tensorflow" in sys.modules)
        """
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, check=True
    )
    assert out.stdout.split() == ["ai_edge_litert", "False"]
    assert select_backend().name == "ai_edge_litert"
