"""``--baseline minirocket``: a strong classical classifier on the same split, for comparison.

aeon's ``MiniRocketClassifier`` (random convolutional kernels and a ridge classifier; Dempster
et al. 2021) is among the most accurate classical time-series classifiers and is shipped with
aeon, so the comparison needs nothing from the network. It trains on the raw training split
(it normalizes on its own) and is scored on the test split the Keras model is scored on.
numba compiles it on first use in a process: 1-3 minutes on 2 cores, then seconds.
"""

from __future__ import annotations

import logging
import time
from typing import Any, Literal

import numpy as np

from stream.datasets import Dataset
from trainer.exceptions import TrainerConfigError

logger = logging.getLogger(__name__)

BaselineName = Literal["none", "minirocket"]
BASELINES: tuple[BaselineName, ...] = ("none", "minirocket")


def run_baseline(name: str, ds: Dataset, *, seed: int) -> dict[str, Any] | None:
    """Fit baseline ``name`` on ``ds``'s training split; its test accuracy (None for none)."""
    if name == "none":
        return None
    if name not in BASELINES:
        msg = f"--baseline {name!r}: use one of {', '.join(BASELINES)}"
        raise TrainerConfigError(msg)
    if ds.kind != "sequence":
        msg = f"--baseline {name} compares sequence models; dataset {ds.name!r} holds images"
        raise TrainerConfigError(msg)
    try:
        from aeon.classification.convolution_based import MiniRocketClassifier
    except ModuleNotFoundError as exc:
        msg = "--baseline minirocket needs aeon: pip install 'edgeinfer[datasets]'"
        raise TrainerConfigError(msg) from exc
    started = time.perf_counter()
    clf = MiniRocketClassifier(random_state=seed, n_jobs=1)
    # aeon takes (N, channels, time).
    clf.fit(np.transpose(ds.x_train, (0, 2, 1)).astype(np.float64), ds.y_train)
    predicted = clf.predict(np.transpose(ds.x_test, (0, 2, 1)).astype(np.float64))
    accuracy = float(np.mean(np.asarray(predicted) == ds.y_test))
    seconds = time.perf_counter() - started
    logger.info('baseline name="%s" accuracy=%.4f seconds=%.1f', name, accuracy, seconds)
    return {
        "name": name,
        "implementation": "aeon.classification.convolution_based.MiniRocketClassifier",
        "accuracy": round(accuracy, 4),
        "seconds": round(seconds, 1),
    }
