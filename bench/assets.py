"""Models and inputs shared by the cases, built once per run (and cached on disk)."""

from __future__ import annotations

import functools
import logging

import numpy as np

from bench.harness import Harness
from bench.messages import synthetic_frames
from bench.models import ModelSet, mobilenet, trained

logger = logging.getLogger(__name__)

#: Distinct camera frames; messages cycle over them.
N_FRAMES = 128


@functools.cache
def frames() -> np.ndarray:
    return synthetic_frames(N_FRAMES)


def mobilenet_models(h: Harness) -> ModelSet:
    if "mobilenet" not in h.cache_models:
        h.progress(
            "preparing MobileNetV2 96x96 float32 + int8 bundles (cached after the first run)"
        )
        h.cache_models["mobilenet"] = mobilenet(h.cache, frames())
    return h.cache_models["mobilenet"]


def digits_models(h: Harness) -> ModelSet:
    return _trained(h, "digits", "cnn")


def sensor_models(h: Harness) -> ModelSet:
    return _trained(h, "basic-motions", "gru")


def _trained(h: Harness, dataset: str, arch: str) -> ModelSet:
    key = f"{dataset}-{arch}"
    if key not in h.cache_models:
        h.progress(f"preparing {key} (edgeinfer train, cached after the first run)")
        h.cache_models[key] = trained(
            h.cache, dataset=dataset, arch=arch, epochs=h.config.train_epochs, log_dir=h.logs
        )
    return h.cache_models[key]


@functools.cache
def digits_images() -> np.ndarray:
    from stream.datasets import load_dataset

    return load_dataset("digits").x_test


@functools.cache
def sensor_windows() -> np.ndarray:
    from stream.datasets import load_dataset

    return load_dataset("basic-motions").x_test
