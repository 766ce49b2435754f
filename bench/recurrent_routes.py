"""Issue 16, item 1: every route tried to make an int8 recurrent model no larger than float32.

``python -m bench.recurrent_routes [--out bench/results/recurrent_routes.json]`` trains the
default LSTM and GRU (seed 0) on basic-motions and on aeon's JapaneseVowels (12 channels,
7-29 steps edge-padded to 29, 9 classes, its own 270/370 split; written to a temporary npz),
then converts each model by every route below and runs each file in LiteRT (a child process,
as the trainer does) on the test split: size, gzip size, accuracy, agreement with Keras, and
p50 single-inference latency over ``--repeats`` child runs (median, min, max). About 10 min
on 2 cores. ``--write-npz jv.npz`` only writes the JapaneseVowels npz (for ``edgeinfer train
--dataset npz:jv.npz``).

Routes (``unrolled``: ``export_clone``, free batch; ``loop``: ``loop_clone``, a WHILE loop,
batch 1):

| route | what |
| --- | --- |
| unrolled-float32 / -dynamic / -int8 | the trainer's float32, dynamic and int8 variants |
| unrolled-aeq-int8 | ai-edge-quantizer static int8 (all ops) of the unrolled float32 model |
| loop-float32 / loop-dynamic | the loop converted as float32 / TF dynamic-range |
| loop-aeq-weight-only-int8 | ai-edge-quantizer weight-only int8 of the loop |
| loop-aeq-int8-matmuls | the shipped ``int8-loop`` variant (static int8 FC + conv) |
| loop-aeq-int8-all-ops | ai-edge-quantizer static int8 of every op of the loop |
| loop-tf-int8 | TensorFlow full-integer int8 of the loop (in a child: it segfaults) |
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)

DEFAULT_OUT = Path("bench/results/recurrent_routes.json")


def japanese_vowels_npz(path: Path, steps: int = 29) -> Path:
    """aeon's JapaneseVowels as an ``npz:`` dataset (variable lengths edge-padded)."""
    from aeon.datasets import load_japanese_vowels

    def load(split: str) -> tuple[np.ndarray, np.ndarray]:
        x, y = load_japanese_vowels(split=split)
        out = np.zeros((len(x), steps, 12), np.float32)
        for i, sample in enumerate(x):
            s = np.asarray(sample, np.float32).T[:steps]
            out[i, : len(s)] = s
            out[i, len(s) :] = s[-1]
        return out, np.asarray([int(v) - 1 for v in y], np.int64)

    x_train, y_train = load("train")
    x_test, y_test = load("test")
    labels = np.array([str(i + 1) for i in range(9)])
    np.savez(path, x=x_train, y=y_train, x_test=x_test, y_test=y_test, labels=labels)
    return path


def _routes(model: Any, calibration: np.ndarray) -> dict[str, Callable[[], bytes]]:
    import tensorflow as tf

    from trainer.export import convert, quiet_native_output
    from trainer.models import export_clone
    from trainer.quantization import QuantizationConfig
    from trainer.recurrent import loop_clone

    def loop_with(config: QuantizationConfig) -> bytes:
        converter = config.apply(tf.lite.TFLiteConverter.from_keras_model(loop_clone(model)))
        with quiet_native_output():
            return config.finalize(bytes(converter.convert()))

    def unstripped(source: Any) -> bytes:
        converter = tf.lite.TFLiteConverter.from_keras_model(source)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
        with quiet_native_output():
            return bytes(converter.convert())

    def aeq(source: Any, recipe: str) -> bytes:
        from ai_edge_quantizer import quantizer
        from ai_edge_quantizer import recipe as recipes
        from ai_edge_quantizer.calibrator import CalibrationMode

        float_model = unstripped(source)
        q = quantizer.Quantizer(bytearray(float_model), getattr(recipes, recipe)())
        result = None
        if q.need_calibration:
            from ai_edge_litert.interpreter import Interpreter

            sigs = Interpreter(model_content=float_model).get_signature_list()
            key = next(iter(sigs))
            name = sigs[key]["inputs"][0]
            feed = [{name: calibration[i : i + 1]} for i in range(min(100, len(calibration)))]
            result = q.calibrate(
                {key: feed}, num_threads=1, mode=CalibrationMode.CALIBRATION_PROFILER_BASED
            )
        with quiet_native_output():
            out = q.quantize(result, enable_progress_report=False).quantized_model
        return QuantizationConfig.for_float32().finalize(bytes(out))

    def loop_int8_matmuls() -> bytes:
        return convert(model, QuantizationConfig.for_int8_loop(calibration))

    return {
        "unrolled-float32": lambda: convert(model, QuantizationConfig.for_float32()),
        "unrolled-dynamic": lambda: convert(model, QuantizationConfig.for_dynamic()),
        "unrolled-int8": lambda: convert(model, QuantizationConfig.for_int8(calibration)),
        "unrolled-aeq-int8": lambda: aeq(export_clone(model), "static_wi8_ai8"),
        "loop-float32": lambda: loop_with(QuantizationConfig.for_float32()),
        "loop-dynamic": lambda: loop_with(QuantizationConfig.for_dynamic()),
        "loop-aeq-weight-only-int8": lambda: aeq(loop_clone(model), "weight_only_wi8_afp32"),
        "loop-aeq-int8-matmuls": loop_int8_matmuls,
        "loop-aeq-int8-all-ops": lambda: aeq(loop_clone(model), "static_wi8_ai8"),
    }


def _tf_int8_loop_in_child(model_path: Path, calibration: Path, out: Path) -> str:
    """TF full-integer int8 of the loop, in a child process (it crashes the converter)."""
    code = (
        "import sys, numpy as np, tensorflow as tf, keras\n"
        "from trainer.recurrent import loop_clone\n"
        "from trainer.quantization import QuantizationConfig\n"
        "m = loop_clone(keras.models.load_model(sys.argv[1]))\n"
        "c = QuantizationConfig.for_int8(np.load(sys.argv[2]), num_calibration_samples=50)\n"
        "conv = c.apply(tf.lite.TFLiteConverter.from_keras_model(m))\n"
        "open(sys.argv[3], 'wb').write(c.finalize(bytes(conv.convert())))\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code, str(model_path), str(calibration), str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"},
    )
    if proc.returncode < 0:
        return f"the converter crashed ({signal.Signals(-proc.returncode).name})"
    if proc.returncode != 0:
        return f"failed (exit {proc.returncode}): {proc.stderr.strip().splitlines()[-1][:300]}"
    return ""


def measure(blob: bytes, x: np.ndarray, y: np.ndarray, k_pred: np.ndarray, repeats: int) -> dict:
    from trainer.evaluate import evaluate_isolated
    from trainer.export import gzip_size

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "m.tflite"
        path.write_bytes(blob)
        runs = [evaluate_isolated(path, x, latency_budget_s=1.0) for _ in range(repeats)]
    pred = np.asarray(runs[0]["probabilities"]).argmax(axis=1)
    p50 = [r["latency_ms"]["p50"] for r in runs]
    return {
        "size_bytes": len(blob),
        "gzip_size_bytes": gzip_size(blob),
        "accuracy": float((pred == y).mean()),
        "agreement_with_keras": float((pred == k_pred).mean()),
        "p50_ms": {"median": statistics.median(p50), "min": min(p50), "max": max(p50)},
        "p99_ms_median": statistics.median(r["latency_ms"]["p99"] for r in runs),
        "resizable_batch": runs[0]["resizable_batch"],
        "input_dtype": runs[0]["input"]["dtype"],
        "ops": runs[0]["ops"],
    }


def bench_model(spec: str, arch: str, work: Path, repeats: int) -> dict[str, Any]:
    from trainer.models import ModelConfig
    from trainer.train import Hyperparameters, train

    started = time.perf_counter()
    result = train(
        spec,
        ModelConfig(arch=arch),  # type: ignore[arg-type]
        hyperparameters=Hyperparameters(seed=0),
        out_dir=work / f"{arch}-{Path(spec).stem}",
        verbose=0,
        allow_gpu=False,
    )
    x, y = result.data.x_test, result.data.y_test
    k_pred = result.model.predict(x, verbose=0).argmax(axis=1)
    calibration = np.asarray(result.data.x_fit, dtype=np.float32)
    out: dict[str, Any] = {
        "dataset": spec if not spec.startswith("npz:") else "japanese-vowels",
        "arch": arch,
        "params": int(result.model.count_params()),
        "keras_accuracy": float((k_pred == y).mean()),
        "test_samples": len(y),
        "train_seconds": round(time.perf_counter() - started, 1),
        "routes": {},
    }
    for name, make in _routes(result.model, calibration).items():
        try:
            blob = make()
        except Exception as exc:  # noqa: BLE001  a route that fails is a measurement too
            first = (str(exc).strip().splitlines() or [repr(exc)])[-1][:300]
            out["routes"][name] = {"error": f"{type(exc).__name__}: {first}"}
            logger.info("route=%s error=%s", name, first)
            continue
        out["routes"][name] = measure(blob, x, y, k_pred, repeats)
        logger.info("route=%s %s", name, {k: out["routes"][name][k] for k in ("size_bytes",)})
    cal = work / "calibration.npy"
    np.save(cal, calibration[:50])
    tflite = work / "loop-tf-int8.tflite"
    error = _tf_int8_loop_in_child(result.model_path, cal, tflite)
    out["routes"]["loop-tf-int8"] = (
        {"error": error} if error else measure(tflite.read_bytes(), x, y, k_pred, repeats)
    )
    f32 = out["routes"]["unrolled-float32"].get("size_bytes")
    for entry in out["routes"].values():
        if f32 and entry.get("size_bytes"):
            entry["size_vs_unrolled_float32"] = round(entry["size_bytes"] / f32, 3)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.recurrent_routes")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--repeats", type=int, default=3, help="LiteRT child runs per file")
    parser.add_argument("--archs", default="gru,lstm")
    parser.add_argument("--datasets", default="basic-motions,japanese-vowels")
    parser.add_argument(
        "--write-npz",
        type=Path,
        metavar="PATH",
        help="only write JapaneseVowels as an npz: dataset to PATH (for `edgeinfer train`)",
    )
    args = parser.parse_args(argv)
    if args.write_npz:
        print(japanese_vowels_npz(args.write_npz))
        return 0
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    results = []
    with tempfile.TemporaryDirectory(prefix="edgeinfer-routes-") as tmp:
        work = Path(tmp)
        specs = {
            "basic-motions": "basic-motions",
            "japanese-vowels": f"npz:{japanese_vowels_npz(work / 'japanese-vowels.npz')}",
        }
        for ds in args.datasets.split(","):
            for arch in args.archs.split(","):
                results.append(bench_model(specs[ds], arch, work, args.repeats))
    import ai_edge_litert
    import ai_edge_quantizer
    import keras
    import tensorflow as tf

    doc = {
        "what": "issue 16 item 1: int8 routes for recurrent models (bench/recurrent_routes.py)",
        "versions": {
            "tensorflow": tf.__version__,
            "keras": keras.__version__,
            "ai_edge_litert": getattr(ai_edge_litert, "__version__", "?"),
            "ai_edge_quantizer": getattr(ai_edge_quantizer, "__version__", "?"),
        },
        "repeats": args.repeats,
        "models": results,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=1) + "\n")
    for r in results:
        print(f"{r['dataset']} {r['arch']} keras {r['keras_accuracy']:.4f}")
        for name, e in r["routes"].items():
            if "error" in e:
                print(f"  {name:<28} {e['error'][:90]}")
            else:
                print(
                    f"  {name:<28} {e['size_bytes']:>8,} B ({e['size_vs_unrolled_float32']:.2f}) "
                    f"gzip {e['gzip_size_bytes']:>7,} acc {e['accuracy']:.4f} "
                    f"p50 {e['p50_ms']['median']:.3f} ms"
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
