"""Checks on what the model returns, and the gate that rolls back a model gone bad.

A model's output is untrusted too: a tampered or broken bundle (or an extreme input) can
give NaN/Inf scores or an unexpected shape, which cannot become a result (JSON has no NaN).
:func:`usable_rows` says which rows of a batch can; the others are dead-lettered with
reason ``bad_model_output``.

:class:`OutputGate` watches the share of bad outputs over the last ``window`` inputs of the
serving model. When it passes ``threshold`` (with at least ``min_inputs`` seen, from at
least ``min_devices`` devices, so one device sending extreme readings cannot trigger it),
the pipeline rolls back to the previous verified version (docs/agent.md, "Model health").
"""

from __future__ import annotations

from collections import deque

import numpy as np


def usable_rows(y: np.ndarray, rows: int, classes: int) -> tuple[np.ndarray, str]:
    """A boolean mask of the rows of ``y`` that can become results, and why the others cannot.

    ``classes`` is the number of labels (0 = any width).
    """
    if y.ndim != 2 or y.shape[0] != rows or (classes and y.shape[1] != classes):
        want = f"({rows}, {classes or 'classes'})"
        message = f"the model returned an output shaped {tuple(y.shape)}, expected {want}"
        return np.zeros(rows, dtype=bool), message
    if not np.issubdtype(y.dtype, np.number):
        return np.zeros(rows, dtype=bool), f"the model returned {y.dtype} scores"
    ok = np.isfinite(y).all(axis=1)
    return ok, "the model returned NaN or infinite scores for this input"


class OutputGate:
    """Sliding share of bad outputs of one model; see the module docstring."""

    def __init__(
        self,
        *,
        window: int = 200,
        min_inputs: int = 50,
        threshold: float = 0.5,
        min_devices: int = 3,
    ) -> None:
        self.window = window
        self.min_inputs = min_inputs
        self.threshold = threshold
        self.min_devices = min_devices
        self._seen: deque[bool] = deque(maxlen=window)
        self._bad = 0
        self._bad_devices: deque[str] = deque(maxlen=window)

    def reset(self) -> None:
        """A new model serves: forget the old one's record."""
        self._seen.clear()
        self._bad_devices.clear()
        self._bad = 0

    def record(self, ok: np.ndarray, devices: list[str]) -> None:
        """One batch: ``ok[i]`` tells whether input ``i`` (from ``devices[i]``) had a result."""
        for good, device in zip(ok.tolist(), devices, strict=True):
            if len(self._seen) == self.window and not self._seen[0]:
                self._bad -= 1
            self._seen.append(good)
            if not good:
                self._bad += 1
                self._bad_devices.append(device)

    @property
    def share(self) -> float:
        return self._bad / len(self._seen) if self._seen else 0.0

    def tripped(self) -> bool:
        """The model fails its health gate: roll it back."""
        return (
            len(self._seen) >= self.min_inputs
            and self.share > self.threshold
            and len(set(self._bad_devices)) >= self.min_devices
        )
