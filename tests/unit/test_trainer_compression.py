"""export_all with the compression additions: the int8-loop variant, a pruned candidate and
its report section, gzip sizes on every variant, the size-vs-accuracy plot, bundles of every
variant that verify. A tiny GRU, so the whole export takes seconds."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("tensorflow")
pytest.importorskip("ai_edge_quantizer")
keras = pytest.importorskip("keras")

from edge_agent.runtime import check_against_manifest, load_runtime  # noqa: E402
from stream.bundle import verify_bundle  # noqa: E402
from stream.preprocessing import SequencePreprocessing  # noqa: E402
from tests.unit.test_quantization import N_CLASSES, TINY, synthetic  # noqa: E402
from trainer.export import BundleInfo, Candidate, export_all  # noqa: E402
from trainer.models import build_model  # noqa: E402
from trainer.pruning import magnitude_mask, prunable_weights, sparsity_of  # noqa: E402


def _info(name: str) -> BundleInfo:
    return BundleInfo(
        name=name,
        version="1",
        task="sequence-classification",
        labels=["a", "b", "c"],
        preprocessing=SequencePreprocessing(
            window=16, stride=16, channels=3, mean=[0.0] * 3, std=[1.0] * 3
        ),
    )


def test_export_all_reports_int8_loop_pruned_variants_and_gzip_sizes(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    x, y = synthetic("gru", n=60)
    model = build_model(TINY["gru"], (16, 3), N_CLASSES)
    model.compile(keras.optimizers.Adam(1e-2), "sparse_categorical_crossentropy")
    model.fit(x, y, epochs=15, batch_size=16, verbose=0)
    pruned = keras.models.clone_model(model)
    pruned.set_weights(model.get_weights())
    for w in prunable_weights(pruned):  # one-shot 30 % (the fine-tuned path: test_pruning)
        w.assign(np.asarray(w.numpy()) * magnitude_mask(np.asarray(w.numpy()), 0.3))
    info = _info("tiny-gru")
    report = export_all(
        model,
        info=info,
        x_calibration=x,
        y_calibration=y,
        x_test=x,
        y_test=y,
        out_dir=tmp_path,
        variants=["int8-loop"],
        max_accuracy_drop=0.2,
        latency_budget_s=0.1,
        candidates=[
            Candidate(
                prefix="pruned",
                model=pruned,
                fields={"source": "pruned", "sparsity": sparsity_of(pruned)},
                section="pruning",
            )
        ],
        sections={"pruning": {"sparsity": 0.3, "variants": []}},
    )

    names = ["int8-loop", "pruned-int8-loop"]
    assert list(report["variants"]) == names
    assert report["pruning"]["variants"] == ["pruned-int8-loop"]
    for name in names:
        entry = report["variants"][name]
        assert not entry.get("error"), entry
        assert 0 < entry["gzip_size_bytes"] < entry["size_bytes"]
    assert report["variants"]["pruned-int8-loop"]["sparsity"] == pytest.approx(0.3, abs=0.01)
    assert report["variants"]["int8-loop"]["resizable_batch"] is False
    assert "WHILE" in report["variants"]["int8-loop"]["ops"]
    assert report["recommended"] in names
    assert (tmp_path / "plots" / "size_vs_accuracy.png").stat().st_size > 0
    assert "## Pruning" in (tmp_path / "report.md").read_text()
    assert json.loads((tmp_path / "report.json").read_text())["pruning"]["sparsity"] == 0.3
    for name in names:
        bundle = verify_bundle(tmp_path / "bundles" / name, require_signature=False)
        assert bundle.manifest.variant == name
        assert (
            bundle.manifest.metrics["gzip_size_bytes"]
            == report["variants"][name]["gzip_size_bytes"]
        )
        # The agent's own runtime (LiteRT only) serves the bundle: a fixed batch of one, so a
        # batch of windows runs one at a time, with the predictions the trainer measured.
        runtime = load_runtime(model_path=tmp_path / "bundles" / name / "model.tflite")
        assert check_against_manifest(runtime, bundle.manifest) == []
        assert runtime.batchable is False
        scores = runtime.run(x[:8])
        assert scores.shape == (8, N_CLASSES)
        keras_model = model if name == "int8-loop" else pruned
        keras_pred = keras_model.predict(x[:8], verbose=0).argmax(axis=1)
        assert (scores.argmax(axis=1) == keras_pred).mean() >= 0.75


def test_int8_loop_is_skipped_with_a_note_for_a_model_without_recurrence(tmp_path: Path) -> None:
    x, y = synthetic("conv1d", n=30)
    model = build_model(TINY["conv1d"], (16, 3), N_CLASSES)
    info = _info("tiny-conv1d")
    report = export_all(
        model, info=info, x_calibration=x, y_calibration=y, x_test=x, y_test=y,
        out_dir=tmp_path, variants=["float32", "int8-loop"], latency_budget_s=0.1,
    )  # fmt: skip
    assert list(report["variants"]) == ["float32"]
    assert any("int8-loop was not exported" in note for note in report["notes"])
