"""The models the benchmark serves, built once and cached under ``OUT/cache``.

* MobileNetV2 96x96x3 from ``keras.applications`` with random weights (``weights=None``:
  nothing is downloaded), converted to float32 and int8 with the trainer's
  :class:`~trainer.quantization.QuantizationConfig` and wrapped into bundles.
* The digits CNN and the BasicMotions GRU, trained by ``edgeinfer train`` (its
  ``report.json`` also feeds the quantization table; its ``model.keras`` the naive loop).

This module imports TensorFlow: only the bench's parent process uses it, never a contender.
"""

from __future__ import annotations

import json
import logging
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.exceptions import BenchError
from bench.procs import Child
from stream.bundle import (
    MANIFEST_FILE,
    MODEL_FILE,
    Manifest,
    TensorSpec,
    read_manifest,
    write_bundle,
)
from stream.preprocessing import ImagePreprocessing

logger = logging.getLogger(__name__)

MOBILENET_NAME = "mobilenetv2-96"
#: Bump when the way the MobileNet bundles are built changes (invalidates the cache).
MOBILENET_VERSION = "bench-1"
MOBILENET_SIZE = 96
MOBILENET_CLASSES = 10
MOBILENET_VARIANTS = ("float32", "int8")


@dataclass(frozen=True, kw_only=True)
class ModelSet:
    """One model: its Keras file, its bundles by variant, preprocessed sample inputs."""

    name: str
    keras_path: Path
    bundles: dict[str, Path]
    inputs_path: Path | None = None
    report_path: Path | None = None


def mobilenet_prep() -> ImagePreprocessing:
    return ImagePreprocessing(
        height=MOBILENET_SIZE,
        width=MOBILENET_SIZE,
        channels=3,
        color="RGB",
        mean=[0.5, 0.5, 0.5],
        std=[0.5, 0.5, 0.5],
    )


def _tensor_spec(detail: dict) -> TensorSpec:  # type: ignore[type-arg]
    signature = list(detail.get("shape_signature", detail["shape"]))
    scale, zero_point = detail.get("quantization", (0.0, 0))
    return TensorSpec(
        shape=[None] + [int(d) for d in signature[1:]],
        dtype=np.dtype(detail["dtype"]).name,
        scale=float(scale),
        zero_point=int(zero_point),
    )


def mobilenet(cache: Path, frames: np.ndarray) -> ModelSet:
    """Build (or reuse) the MobileNetV2 Keras model and its float32/int8 bundles."""
    root = cache / f"mobilenet-{MOBILENET_VERSION}"
    keras_path = root / "model.keras"
    inputs_path = root / "inputs.npy"
    bundles = {v: root / "bundles" / v for v in MOBILENET_VARIANTS}
    prep = mobilenet_prep()
    done = keras_path.is_file() and all((b / MANIFEST_FILE).is_file() for b in bundles.values())
    if not done:
        import keras

        from trainer.export import convert
        from trainer.quantization import QuantizationConfig

        logger.info(
            'building MobileNetV2 %dx%dx3 (random weights) into "%s"',
            MOBILENET_SIZE,
            MOBILENET_SIZE,
            root,
        )
        keras.utils.set_random_seed(0)
        model = keras.applications.MobileNetV2(
            input_shape=(MOBILENET_SIZE, MOBILENET_SIZE, 3),
            alpha=1.0,
            include_top=True,
            weights=None,
            classes=MOBILENET_CLASSES,
        )
        root.mkdir(parents=True, exist_ok=True)
        model.save(keras_path)
        calibration = prep.apply(frames[:100])
        labels = [f"class-{i}" for i in range(MOBILENET_CLASSES)]
        for variant in MOBILENET_VARIANTS:
            config = (
                QuantizationConfig.for_int8(calibration, num_calibration_samples=len(calibration))
                if variant == "int8"
                else QuantizationConfig.for_float32()
            )
            blob = convert(model, config, clone=False)
            write_bundle(bundles[variant], _manifest(blob, variant, prep, labels), blob)
    if not inputs_path.is_file():
        np.save(inputs_path, prep.apply(frames[:64]))
    return ModelSet(
        name=MOBILENET_NAME, keras_path=keras_path, bundles=bundles, inputs_path=inputs_path
    )


def _manifest(blob: bytes, variant: str, prep: ImagePreprocessing, labels: list[str]) -> Manifest:
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=blob)
    return Manifest(
        name=MOBILENET_NAME,
        version=MOBILENET_VERSION,
        variant=variant,
        task="image-classification",
        input=_tensor_spec(interp.get_input_details()[0]),
        output=_tensor_spec(interp.get_output_details()[0]),
        preprocessing=prep,
        labels=labels,
    )


def trained(
    cache: Path,
    *,
    dataset: str,
    arch: str,
    epochs: int | None,
    log_dir: Path,
    variants: tuple[str, ...] = ("float32", "float16", "dynamic", "int8"),
) -> ModelSet:
    """Train ``dataset``/``arch`` with ``edgeinfer train`` once; reuse the run folder after."""
    name = f"{dataset}-{arch}"
    root = cache / "train" / (f"{name}-e{epochs}" if epochs else name)
    report = root / "report.json"
    if not (report.is_file() and (root / "model.keras").is_file()):
        cmd = [
            sys.executable,
            "-m",
            "stream",
            "train",
            "--dataset",
            dataset,
            "--arch",
            arch,
            "--out",
            str(root),
            "--name",
            name,
            "--version",
            "bench-1",
            "--quiet",
            "--variants",
            ",".join(variants),
        ]
        if epochs:
            cmd += ["--epochs", str(epochs)]
        logger.info('training %s (edgeinfer train) into "%s"', name, root)
        child = Child(name=f"train {name}", cmd=cmd, log_path=log_dir / f"train-{name}.log").start()
        assert child.proc is not None
        code = child.proc.wait()
        child.stop()
        if code != 0 or not report.is_file():
            msg = (
                f"`edgeinfer train` for {name} exited with {code}; its log "
                f"({child.log_path}) ends with:\n{child.log_tail()}"
            )
            raise BenchError(msg)
    bundles = {
        p.name: p for p in sorted((root / "bundles").iterdir()) if (p / MODEL_FILE).is_file()
    }
    return ModelSet(name=name, keras_path=root / "model.keras", bundles=bundles, report_path=report)


def load_report(path: Path) -> dict:  # type: ignore[type-arg]
    data = json.loads(path.read_text())
    if not isinstance(data, dict) or "variants" not in data:
        msg = (
            f"{path} is not a trainer report.json (no 'variants'); "
            "pass the one `edgeinfer train` wrote"
        )
        raise BenchError(msg)
    return data


def window_of(bundle: Path) -> tuple[int, int, int]:
    """(window, stride, channels) of a sequence bundle."""
    prep = read_manifest(bundle).preprocessing
    window = getattr(prep, "window", None)
    if window is None:
        msg = f"{bundle} is not a sequence model"
        raise BenchError(msg)
    return int(window), int(prep.stride), int(prep.channels)  # type: ignore[union-attr]
