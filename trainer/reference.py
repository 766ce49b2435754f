"""The training data's reference statistics, written into every bundle's manifest.

What the agent compares the field against (``stream/reference.py`` is the format,
``edge_agent/monitoring.py`` the comparison):

* **Images**: per colour channel, the share of training pixels in 16 fixed bins of width 16
  over 0..255 (uint8 pixels exactly as a device sends them, before normalization), and the
  pixels' mean and standard deviation.
* **Sequences**: per channel, the deciles of the training readings (raw values, before
  normalization) as bin edges, the share of readings in each bin (about 10% each; ties
  merge bins), mean and standard deviation. A constant channel gets two bins around its
  value, so any change of it shows.
* **Scores**: the top-class score of the exported model on the test split, on 20 fixed
  bins of width 0.05 (each variant's own scores: an int8 model is less confident).

numpy only; at most :data:`MAX_VALUES` values per channel are summarised (a seeded random
subset beyond that).
"""

from __future__ import annotations

import logging

import numpy as np

from stream.reference import (
    MAX_CHANNELS,
    SCORE_EDGES,
    ChannelReference,
    Reference,
    ScoreReference,
)

logger = logging.getLogger(__name__)

#: Bins per sequence channel (deciles).
SEQUENCE_BINS = 10
#: Pixel bins: 16 of width 16 over 0..255.
IMAGE_EDGES: tuple[float, ...] = tuple(float(16 * i) for i in range(1, 16))
#: Values per channel summarised at most (a seeded random subset beyond).
MAX_VALUES = 2_000_000


def _shares(values: np.ndarray, edges: np.ndarray) -> list[float]:
    counts = np.bincount(np.searchsorted(edges, values, side="right"), minlength=len(edges) + 1)
    return [float(v) for v in counts / max(len(values), 1)]


def _channel(values: np.ndarray, edges: np.ndarray) -> ChannelReference:
    return ChannelReference(
        edges=[float(e) for e in edges],
        proportions=_shares(values, edges),
        mean=float(values.mean()),
        std=float(values.std()),
    )


def _quantile_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """Interior edges at the ``1/bins .. (bins-1)/bins`` quantiles, without repeats."""
    qs = np.quantile(values, np.linspace(0.0, 1.0, bins + 1)[1:-1])
    edges = np.unique(qs.astype(np.float64))
    if len(edges) == 1:  # a (nearly) constant channel: a bin just for its value
        edges = np.array([edges[0], np.nextafter(edges[0], np.inf)])
    return edges


def input_channels(x_train: np.ndarray, kind: str, *, seed: int = 0) -> list[ChannelReference]:
    """Per-channel statistics of raw training inputs: uint8 images (N, H, W, C) or float
    windows (N, T, C)."""
    channels = int(x_train.shape[-1])
    flat = np.asarray(x_train).reshape(-1, channels)
    if len(flat) > MAX_VALUES:
        rng = np.random.default_rng(seed)
        flat = flat[np.sort(rng.choice(len(flat), MAX_VALUES, replace=False))]
    out = []
    for c in range(channels):
        values = flat[:, c].astype(np.float64)
        values = values[np.isfinite(values)]
        if kind == "image":
            edges = np.asarray(IMAGE_EDGES)
        else:
            edges = _quantile_edges(values, SEQUENCE_BINS) if len(values) else np.array([0.0])
        out.append(_channel(values if len(values) else np.zeros(1), edges))
    return out


def score_reference(probabilities: np.ndarray) -> ScoreReference:
    """The distribution of the top-class score of ``probabilities`` (N, classes)."""
    top = np.clip(np.nan_to_num(np.asarray(probabilities).max(axis=1), nan=0.0), 0.0, 1.0)
    edges = np.asarray(SCORE_EDGES)
    return ScoreReference(
        edges=list(SCORE_EDGES), proportions=_shares(top, edges), samples=int(len(top))
    )


def build_reference(
    x_train: np.ndarray,
    kind: str,
    *,
    probabilities: np.ndarray | None = None,
    channels: list[ChannelReference] | None = None,
) -> Reference | None:
    """The manifest's ``reference``; None when the input has more than
    :data:`stream.reference.MAX_CHANNELS` channels (logged: no drift score then)."""
    width = int(x_train.shape[-1])
    if width > MAX_CHANNELS:
        logger.warning(
            "no reference statistics: %d input channels, over the %d a manifest carries",
            width,
            MAX_CHANNELS,
        )
        return None
    return Reference(
        kind="image" if kind == "image" else "sequence",
        samples=int(len(x_train)),
        channels=channels if channels is not None else input_channels(x_train, kind),
        score=None if probabilities is None else score_reference(probabilities),
    )
