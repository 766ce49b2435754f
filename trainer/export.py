"""Keras model -> LiteRT flatbuffer for each variant, and the bundles that carry them.

Conversion starts from :func:`trainer.models.export_clone` (unrolled recurrences, float32
layers) through ``tf.lite.TFLiteConverter.from_keras_model`` with builtin ops only.
Measured with Keras 3.15 / TF 2.21 / ai-edge-litert 2.3: this is the route on which every
architecture converts to the four post-training variants with a resizable batch; ``WHILE``
loops fail to convert with a free batch and crash TensorFlow's int8 calibration. The
``int8-loop`` variant of recurrent models is the exception (:mod:`trainer.recurrent`): a
fixed-batch ``WHILE`` loop quantized by ai-edge-quantizer.
"""

from __future__ import annotations

import contextlib
import gzip
import logging
import os
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import keras
import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from stream.bundle import Manifest, TensorSpec, write_bundle
from stream.preprocessing import Preprocessing
from stream.reference import Reference
from trainer import plots
from trainer.evaluate import (
    LATENCY_BUDGET_S,
    accuracy,
    confusion_matrix,
    evaluate_isolated,
    macro_f1,
)
from trainer.exceptions import EvaluationError, ExportError
from trainer.models import export_clone
from trainer.quantization import EXPORT_VARIANTS, ExportVariant, QuantizationConfig
from trainer.recurrent import has_recurrence, loop_clone, quantize_loop_int8
from trainer.report import build_report, write_report

logger = logging.getLogger(__name__)


def convert(model: keras.Model, config: QuantizationConfig, *, clone: bool = True) -> bytes:
    """Convert ``model`` to a LiteRT flatbuffer with the settings of ``config``."""
    import tensorflow as tf

    if config.recurrence == "loop":
        if not has_recurrence(model):
            msg = f"the {config.variant} variant is for recurrent models; {model.name} has none"
            raise ExportError(msg)
        source = loop_clone(model)
    else:
        source = export_clone(model) if clone else model
    if config.integer_only:
        _refuse_while_loops(source)
    converter = config.apply(tf.lite.TFLiteConverter.from_keras_model(source))
    try:
        with quiet_native_output():
            result = converter.convert()
    except Exception as exc:  # the converter raises ConverterError, ValueError, RuntimeError
        first = str(exc).strip().splitlines()[0][:400] if str(exc).strip() else repr(exc)
        msg = (
            f"converting {model.name} to the {config.variant} variant failed: {first}; "
            "only LiteRT builtin ops are allowed (no Flex ops)"
        )
        raise ExportError(msg) from exc
    if config.loop_int8_ops and config.representative_data is not None:
        try:
            with quiet_native_output():
                result = quantize_loop_int8(
                    bytes(result),
                    config.representative_data,
                    ops=config.loop_int8_ops,
                    samples=config.num_calibration_samples,
                )
        except (ValueError, RuntimeError, KeyError) as exc:
            msg = f"ai-edge-quantizer failed on the {config.variant} variant of {model.name}: {exc}"
            raise ExportError(msg) from exc
    final = config.finalize(bytes(result))
    logger.info(
        'converted variant="%s" bytes=%d converter_bytes=%d',
        config.variant,
        len(final),
        len(result),
    )
    return final


def _refuse_while_loops(model: keras.Model) -> None:
    """int8 calibration of a model with a WHILE loop segfaults the converter: refuse it."""
    looping = [
        layer.name
        for layer in _all_layers(model)
        if "unroll" in layer.get_config() and not layer.get_config()["unroll"]
    ]
    if looping:
        msg = (
            f"int8 calibration of recurrent layers with unroll=False ({', '.join(looping)}) "
            "crashes the converter; convert the export_clone() of the model (unrolled)"
        )
        raise ExportError(msg)


def _all_layers(model: keras.Model) -> list[keras.layers.Layer]:
    layers: list[keras.layers.Layer] = []
    for layer in model.layers:
        layers.append(layer)
        if isinstance(layer, keras.Model):
            layers.extend(_all_layers(layer))
    return layers


@contextlib.contextmanager
def quiet_native_output() -> Iterator[None]:
    """Silence what the converter prints on fds 1 and 2 (saved-artifact listings, MLIR
    chatter) while it runs; the captured text goes to the debug log."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = [os.dup(1), os.dup(2)]
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 1)
        os.dup2(sink.fileno(), 2)
        try:
            yield
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os.dup2(saved[0], 1)
            os.dup2(saved[1], 2)
            for fd in saved:
                os.close(fd)
            sink.seek(0)
            logger.debug("converter output: %s", sink.read()[-4000:].decode(errors="replace"))


def representative_inputs(x: np.ndarray, y: np.ndarray, *, limit: int = 200) -> np.ndarray:
    """Up to ``limit`` preprocessed training inputs, every class represented."""
    if len(x) <= limit:
        return np.asarray(x, dtype=np.float32)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(x))
    # Round-robin over classes so rare classes are calibrated too.
    by_class = [order[y[order] == c] for c in np.unique(y)]
    picked: list[int] = []
    i = 0
    while len(picked) < limit:
        for idx in by_class:
            if i < len(idx) and len(picked) < limit:
                picked.append(int(idx[i]))
        i += 1
    return np.asarray(x[np.sort(picked)], dtype=np.float32)


# ------------------------------------------------------------------ export + evaluate


@dataclass(frozen=True, kw_only=True)
class BundleInfo:
    """What every bundle of one model shares."""

    name: str
    version: str
    task: str
    labels: list[str]
    preprocessing: Preprocessing
    #: The training inputs' statistics (trainer/reference.py); each variant adds its scores.
    reference: Reference | None = None


def keras_metrics(
    model: keras.Model, x_test: np.ndarray, y_test: np.ndarray, num_classes: int
) -> tuple[dict[str, Any], np.ndarray]:
    """Accuracy and macro F1 of the Keras model on the test split, and its probabilities."""
    probabilities = np.asarray(model.predict(x_test, batch_size=256, verbose=0), dtype=np.float32)
    predicted = probabilities.argmax(axis=1)
    metrics = {
        "accuracy": accuracy(y_test, predicted),
        "macro_f1": macro_f1(y_test, predicted, num_classes),
        "params": int(model.count_params()),
    }
    return metrics, probabilities


@dataclass(frozen=True, kw_only=True)
class Candidate:
    """A further Keras model exported next to the trained one (pruned, distilled).

    Its variants are named ``<prefix>-<variant>`` and judged by the same gates against the
    trained model's Keras accuracy; ``fields`` are added to each of its report entries.
    """

    prefix: str
    model: keras.Model
    fields: dict[str, Any]
    #: The report section (``pruning``, ``distillation``) that lists this model's variants.
    section: str | None = None


def gzip_size(blob: bytes) -> int:
    """Bytes of ``blob`` gzip-compressed at level 9 (what an over-the-air download costs)."""
    return len(gzip.compress(blob, compresslevel=9, mtime=0))


def export_all(
    model: keras.Model,
    *,
    info: BundleInfo,
    x_calibration: np.ndarray,
    y_calibration: np.ndarray,
    x_test: np.ndarray,
    y_test: np.ndarray,
    out_dir: Path,
    variants: Sequence[ExportVariant],
    max_accuracy_drop: float = 0.01,
    private_key: Ed25519PrivateKey | None = None,
    meta: dict[str, Any] | None = None,
    latency_budget_s: float = LATENCY_BUDGET_S,
    candidates: Sequence[Candidate] = (),
    sections: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Convert, test-invoke and evaluate every variant in LiteRT; write bundles and reports.

    ``variants`` are exported for ``model`` and for every candidate (``int8-loop`` only for
    recurrent models). A variant that fails to convert or to run is reported with its error;
    the others go on. ``sections`` (``pruning``, ``distillation``) are added to the report.
    Returns the report (also written to ``out_dir/report.json`` and ``report.md``).
    """
    num_classes = len(info.labels)
    k_metrics, k_probs = keras_metrics(model, x_test, y_test, num_classes)
    k_pred = k_probs.argmax(axis=1)
    logger.info("keras accuracy=%.4f macro_f1=%.4f", k_metrics["accuracy"], k_metrics["macro_f1"])
    plot_paths: dict[str, Path] = {}
    if (out_dir / "plots" / "training_curves.png").exists():
        plot_paths["training curves"] = out_dir / "plots" / "training_curves.png"
    plot_paths["confusion matrix: keras"] = plots.confusion_matrix_plot(
        confusion_matrix(y_test, k_pred, num_classes),
        info.labels,
        "keras",
        out_dir / "plots" / "confusion_keras.png",
    )
    calibration = representative_inputs(x_calibration, y_calibration)
    recurrent = has_recurrence(model)
    chosen = [v for v in EXPORT_VARIANTS if v in variants]
    skipped = [v for v in chosen if v == "int8-loop" and not recurrent]
    if skipped:
        logger.info('variant="int8-loop" skipped reason="the model has no recurrent layer"')
    sources = [Candidate(prefix="", model=model, fields={}), *candidates]
    entries: dict[str, dict[str, Any]] = {}
    models: dict[str, bytes] = {}
    runs: dict[str, dict[str, Any]] = {}
    scores: dict[str, np.ndarray] = {}
    with tempfile.TemporaryDirectory(prefix="edgeinfer-export-") as tmp:
        for source in sources:
            clone = export_clone(source.model)
            for variant in chosen:
                if variant in skipped:
                    continue
                name = f"{source.prefix}-{variant}" if source.prefix else variant
                started = time.perf_counter()
                try:
                    config = QuantizationConfig.for_variant(variant, calibration)
                    blob = convert(clone, config, clone=False)
                    path = Path(tmp) / f"{name}.tflite"
                    path.write_bytes(blob)
                    run = evaluate_isolated(path, x_test, latency_budget_s=latency_budget_s)
                except (ExportError, EvaluationError) as exc:
                    logger.error('variant="%s" failed error="%s"', name, exc)
                    entries[name] = {
                        "error": str(exc),
                        "accuracy": None,
                        "macro_f1": None,
                        "size_bytes": None,
                        "gzip_size_bytes": None,
                        "latency_ms": None,
                        "ops": [],
                        **source.fields,
                    }
                    continue
                probs = np.asarray(run.pop("probabilities"), dtype=np.float32)
                predicted = probs.argmax(axis=1)
                entries[name] = {
                    "accuracy": accuracy(y_test, predicted),
                    "macro_f1": macro_f1(y_test, predicted, num_classes),
                    "size_bytes": len(blob),
                    "gzip_size_bytes": gzip_size(blob),
                    "latency_ms": run["latency_ms"],
                    "ops": run["ops"],
                    "agreement_with_keras": accuracy(k_pred, predicted),
                    "mean_abs_probability_diff": float(np.abs(probs - k_probs).mean()),
                    "input_dtype": run["input"]["dtype"],
                    "output_dtype": run["output"]["dtype"],
                    "use_default_delegates": run["use_default_delegates"],
                    "fallback_reason": run["fallback_reason"],
                    "resizable_batch": run["resizable_batch"],
                    "export_seconds": round(time.perf_counter() - started, 2),
                    **source.fields,
                }
                models[name] = blob
                runs[name] = run
                scores[name] = probs
                plot_paths[f"confusion matrix: {name}"] = plots.confusion_matrix_plot(
                    confusion_matrix(y_test, predicted, num_classes),
                    info.labels,
                    name,
                    out_dir / "plots" / f"confusion_{name}.png",
                )
                logger.info(
                    'variant="%s" accuracy=%.4f size_bytes=%d p50_ms=%.4f',
                    name, entries[name]["accuracy"], len(blob), run["latency_ms"]["p50"],
                )  # fmt: skip
    report = build_report(
        meta={"name": info.name, "version": info.version, **(meta or {})},
        keras=k_metrics,
        variants=entries,
        max_drop=max_accuracy_drop,
        n_test=len(y_test),
    )
    report.update(sections or {})
    for source in candidates:
        if source.section and isinstance(report.get(source.section), dict):
            report[source.section]["variants"] = [
                name for name in entries if name.startswith(f"{source.prefix}-")
            ]
    if skipped:
        report["notes"].insert(
            0, "int8-loop was not exported: it applies to recurrent (lstm, gru) models only."
        )
    if any(e.get("size_bytes") for e in entries.values()):
        plot_paths["size vs accuracy"] = plots.size_accuracy_plot(
            entries,
            keras_accuracy=float(k_metrics["accuracy"]),
            recommended=report["recommended"],
            path=out_dir / "plots" / "size_vs_accuracy.png",
        )
    for done, blob in models.items():
        write_variant_bundle(
            out_dir / "bundles" / done,
            info=info,
            variant=done,
            model=blob,
            run=runs[done],
            report=report,
            private_key=private_key,
            reference=with_scores(info.reference, scores[done]),
        )
    write_report(out_dir, report, plot_paths)
    return report


def with_scores(reference: Reference | None, probabilities: np.ndarray) -> Reference | None:
    """``reference`` plus the distribution of this variant's top-class test scores."""
    from trainer.reference import score_reference

    if reference is None:
        return None
    return replace(reference, score=score_reference(probabilities))


def _summary(entry: dict[str, Any]) -> dict[str, Any]:
    keys = (
        "accuracy",
        "macro_f1",
        "size_bytes",
        "gzip_size_bytes",
        "latency_ms",
        "publishable",
        "error",
    )
    return {k: entry[k] for k in keys if k in entry}


def write_variant_bundle(
    directory: Path,
    *,
    info: BundleInfo,
    variant: str,
    model: bytes,
    run: dict[str, Any],
    report: dict[str, Any],
    private_key: Ed25519PrivateKey | None,
    reference: Reference | None = None,
) -> Path:
    """Write one signed (when a key is given) bundle with this variant's metrics."""
    entry = report["variants"][variant]
    metrics = {
        **{k: v for k, v in entry.items() if k not in ("ops", "fallback_reason")},
        "variant": variant,
        "test_samples": report["test_samples"],
        "keras": report["keras"],
        "variants": {name: _summary(e) for name, e in report["variants"].items()},
        "recommended": report["recommended"],
        "max_accuracy_drop": report["max_accuracy_drop"],
    }
    manifest = Manifest(
        name=info.name,
        version=info.version,
        variant=variant,
        task=info.task,
        input=TensorSpec(**run["input"]),
        output=TensorSpec(**run["output"]),
        preprocessing=info.preprocessing,
        labels=list(info.labels),
        metrics=metrics,
        use_default_delegates=bool(run["use_default_delegates"]),
        reference=reference,
    )
    write_bundle(directory, manifest, model, private_key=private_key)
    logger.info('bundle written variant="%s" path="%s"', variant, directory)
    return directory
