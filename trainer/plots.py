"""PNG plots: training curves, one confusion matrix per variant and the size-vs-accuracy
frontier of the variants (matplotlib, Agg backend)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np

logger = logging.getLogger(__name__)


def _pyplot():  # type: ignore[no-untyped-def]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def training_curves(history: dict[str, list[float]], path: Path) -> Path:
    """Loss and accuracy per epoch, training and validation."""
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.5))
    for ax, metric in zip(axes, ("loss", "accuracy"), strict=True):
        for key, style in ((metric, "-"), (f"val_{metric}", "--")):
            if key in history:
                epochs = np.arange(1, len(history[key]) + 1)
                ax.plot(epochs, history[key], style, label=key)
        ax.set_xlabel("epoch")
        ax.set_title(metric)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def confusion_matrix_plot(cm: np.ndarray, labels: list[str], title: str, path: Path) -> Path:
    """A confusion matrix with counts in the cells (rows: true class, columns: predicted)."""
    plt = _pyplot()
    n = len(labels)
    size = max(3.5, min(12.0, 0.45 * n + 2))
    fig, ax = plt.subplots(figsize=(size, size))
    ax.imshow(cm, cmap="Blues")
    ax.set_xticks(range(n), labels, rotation=90 if n > 6 else 0)
    ax.set_yticks(range(n), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    if n <= 30:
        threshold = cm.max() / 2 if cm.size else 0
        for i in range(n):
            for j in range(n):
                ax.text(
                    j, i, int(cm[i, j]), ha="center", va="center", fontsize=8,
                    color="white" if cm[i, j] > threshold else "black",
                )  # fmt: skip
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def size_accuracy_plot(
    variants: dict[str, dict[str, Any]],
    *,
    keras_accuracy: float,
    recommended: str | None,
    path: Path,
) -> Path:
    """Test accuracy against file size (log scale) of every variant that ran: the frontier."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    stacked: dict[tuple[float, float], int] = {}  # labels of points at one spot are stacked
    for name, v in variants.items():
        if not v.get("size_bytes") or v.get("accuracy") is None:
            continue
        marker = "*" if name == recommended else ("o" if v.get("publishable") else "x")
        ax.scatter(v["size_bytes"], v["accuracy"], marker=marker, s=120 if marker == "*" else 40)
        spot = (round(float(np.log10(v["size_bytes"])), 1), round(float(v["accuracy"]), 3))
        stacked[spot] = stacked.get(spot, -1) + 1
        ax.annotate(name, (v["size_bytes"], v["accuracy"]), fontsize=7,
                    xytext=(4, 3 + 8 * stacked[spot]), textcoords="offset points")  # fmt: skip
    ax.axhline(keras_accuracy, linestyle="--", linewidth=1, color="grey", label="keras")
    ax.set_xscale("log")
    ax.set_xlabel("model file size (bytes, log scale)")
    ax.set_ylabel("test accuracy")
    ax.set_title("size vs accuracy (* recommended, x not publishable)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path
