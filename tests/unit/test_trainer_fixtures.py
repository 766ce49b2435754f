"""The real-bundle fixtures other tests build on: they verify, load in LiteRT, and are accurate."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from stream.bundle import VARIANTS, generate_keys, load_private_key, load_public_key, verify_bundle
from stream.datasets import load_dataset

pytestmark = pytest.mark.slow


def _predict(bundle: Path, x: np.ndarray) -> np.ndarray:
    from ai_edge_litert.interpreter import Interpreter

    from stream.preprocessing import dequantize, quantize

    m = verify_bundle(bundle).manifest
    interp = Interpreter(model_path=str(bundle / "model.tflite"), num_threads=1)
    inp = interp.get_input_details()[0]
    interp.resize_tensor_input(inp["index"], [len(x), *m.input.shape[1:]])
    interp.allocate_tensors()
    xin = m.preprocessing.apply(x)
    if m.input.quantized:
        xin = quantize(xin, m.input.scale, m.input.zero_point, m.input.dtype)
    interp.set_tensor(inp["index"], xin)
    interp.invoke()
    out = interp.get_tensor(interp.get_output_details()[0]["index"])
    if m.output.quantized:
        out = dequantize(out, m.output.scale, m.output.zero_point)
    return out.argmax(axis=1)


def test_digits_bundles_are_real_and_accurate(digits_bundles: dict[str, Path]) -> None:
    assert sorted(digits_bundles) == sorted(VARIANTS)
    ds = load_dataset("digits")
    for variant, path in digits_bundles.items():
        manifest = json.loads((path / "manifest.json").read_text())
        assert manifest["variant"] == variant
        assert manifest["input"]["shape"] == [None, 8, 8, 1]
        assert manifest["input"]["dtype"] == ("int8" if variant == "int8" else "float32")
        assert manifest["metrics"]["accuracy"] >= 0.95
        # The agent's path (manifest preprocessing + LiteRT) reproduces the trainer's number.
        acc = float((_predict(path, ds.x_test) == ds.y_test).mean())
        assert acc == pytest.approx(manifest["metrics"]["accuracy"], abs=1e-9)


def test_motions_bundles_are_sequence_models(motions_bundles: dict[str, Path]) -> None:
    manifest = json.loads((motions_bundles["int8"] / "manifest.json").read_text())
    assert manifest["task"] == "sequence-classification"
    assert manifest["preprocessing"]["window"] == 100
    assert manifest["preprocessing"]["channels"] == 6
    assert manifest["labels"] == ["badminton", "running", "standing", "walking"]
    assert manifest["metrics"]["accuracy"] >= 0.9


def test_make_bundle_signs_and_versions(make_bundle: Callable[..., Path], tmp_path: Path) -> None:
    generate_keys(tmp_path / "k", tmp_path / "k.pub")
    signed = make_bundle(
        "digits", "cnn", "float16", version="7", private_key=load_private_key(tmp_path / "k")
    )
    bundle = verify_bundle(signed, public_key=load_public_key(tmp_path / "k.pub"))
    assert (bundle.manifest.version, bundle.manifest.variant) == ("7", "float16")
    assert bundle.manifest.name == "digits-cnn"
