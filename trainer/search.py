"""``--arch auto``: train each candidate architecture, keep the best on the validation split.

The candidates are tried in :data:`AUTO_ORDER` (MiniRocket first: one fit, no epochs, and the
most accurate on long series with few samples) while the time budget lasts
(at least one always runs). Each candidate trains exactly as ``--arch <it>`` would (seeded
the same way), so the chosen model is the one a user would get by naming its architecture.
The validation split decides: highest validation accuracy at the epoch early stopping
restores, ties broken by the lower validation loss. The test split is never looked at.
"""

from __future__ import annotations

import logging
from typing import Any

from trainer.models import IMAGE_ARCHS, SEQUENCE_ARCHS, Arch, check_arch

logger = logging.getLogger(__name__)

AUTO = "auto"
#: The order ``--arch auto`` tries sequence models in: the cheapest to train first.
AUTO_ORDER: tuple[Arch, ...] = ("minirocket", "conv1d", "gru", "lstm")
#: ``--search-budget`` default, seconds: after it no further candidate starts.
DEFAULT_BUDGET_S = 1200.0


def candidates(arch: str, kind: str) -> tuple[Arch, ...]:
    """The architectures to train: ``arch`` itself, or every one that fits ``kind`` for auto."""
    if arch != AUTO:
        check_arch(arch, kind)
        return (arch,)  # type: ignore[return-value]
    allowed = IMAGE_ARCHS if kind == "image" else SEQUENCE_ARCHS
    return tuple(a for a in AUTO_ORDER if a in allowed) or allowed


def validation_score(history: dict[str, list[float]]) -> tuple[float, float]:
    """(validation accuracy, -validation loss) at the epoch with the lowest validation loss.

    That is the epoch early stopping restores; higher is better in both places.
    """
    losses = history.get("val_loss") or [float("inf")]
    best = min(range(len(losses)), key=losses.__getitem__)
    accuracy = (history.get("val_accuracy") or [0.0] * len(losses))[best]
    # Rounded: Keras reports float32 accuracies (4/6 -> 0.66666669), a fitted model float64
    # ones (0.66666666...); equal shares must tie so that the loss decides.
    return round(float(accuracy), 6), -float(losses[best])


def summary(arch: str, history: dict[str, list[float]], seconds: float) -> dict[str, Any]:
    """One candidate's line in ``run.json``/``report.json`` ``search``."""
    accuracy, neg_loss = validation_score(history)
    return {
        "arch": arch,
        "val_accuracy": round(accuracy, 4),
        "val_loss": round(-neg_loss, 4),
        "epochs": len(history.get("loss", [])),
        "seconds": round(seconds, 1),
    }
