"""LiteRT evaluation: metrics, the isolated child process, and the delegate fallback."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

from trainer.evaluate import (
    accuracy,
    confusion_matrix,
    evaluate_isolated,
    macro_f1,
    percentile_ms,
    tensor_spec,
)
from trainer.exceptions import EvaluationError


def test_metrics_match_scikit_learn() -> None:
    from sklearn.metrics import f1_score

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 200)
    p = np.where(rng.random(200) < 0.7, y, rng.integers(0, 4, 200))
    p[p == 3] = 2  # class 3 never predicted
    assert accuracy(y, p) == pytest.approx(float((y == p).mean()))
    assert macro_f1(y, p, 5) == pytest.approx(f1_score(y, p, average="macro"))
    cm = confusion_matrix(y, p, 4)
    assert cm.sum() == 200 and cm[:, 3].sum() == 0


def test_percentiles_in_milliseconds() -> None:
    assert percentile_ms([1_000_000] * 99 + [5_000_000], 50) == pytest.approx(1.0)


def test_tensor_spec_has_a_free_batch_dimension() -> None:
    detail = {
        "shape": np.array([1, 100, 6]),
        "shape_signature": np.array([-1, 100, 6]),
        "dtype": np.int8,
        "quantization": (0.05, -3),
    }
    assert tensor_spec(detail) == {
        "shape": [None, 100, 6],
        "dtype": "int8",
        "scale": 0.05,
        "zero_point": -3,
    }


def test_a_file_litert_cannot_load_raises_evaluation_error(tmp_path: Path) -> None:
    model = tmp_path / "broken.tflite"
    model.write_bytes(b"not a flatbuffer")
    with pytest.raises(EvaluationError, match="broken.tflite does not run in LiteRT"):
        evaluate_isolated(model, np.zeros((2, 4), np.float32), timeout_s=60)


FAKE_CHILD = """#!{python}
import json, os, signal, sys
args = sys.argv[1:]
if args[args.index("--delegates") + 1] == "auto":
    os.kill(os.getpid(), signal.SIGSEGV)
out = args[args.index("--out") + 1]
with open(out, "w") as fh:
    json.dump({{"use_default_delegates": False, "fallback_reason": None, "ok": True}}, fh)
"""


def test_a_crash_under_default_delegates_is_retried_without_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = tmp_path / "python"
    fake.write_text(FAKE_CHILD.format(python=sys.executable))
    fake.chmod(0o755)
    monkeypatch.setattr(sys, "executable", str(fake))
    model = tmp_path / "m.tflite"
    model.write_bytes(b"x")
    result = evaluate_isolated(model, np.zeros((2, 4), np.float32), timeout_s=60)
    assert result["ok"] is True
    assert result["use_default_delegates"] is False
    assert "LiteRT crashed the process (SIGSEGV)" in result["fallback_reason"]
    json.dumps(result)
