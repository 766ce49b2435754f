"""Retraining from the field: ``kafka:samples`` with ``--labels-from``, ``--mix``, ``--like``.

``edgeinfer train --dataset kafka:samples --labels-from feedback --mix digits --like
BUNDLE_DIR`` trains a candidate for a model that is serving now (issue 14, item 5):

- **labels** (``--labels-from TOPIC``): captured inputs are labelled from the feedback
  topic (:mod:`trainer.feedback`, joined in :mod:`trainer.capture`);
- **geometry** (``--like BUNDLE_DIR``, else ``--mix``'s dataset): the candidate takes the
  serving model's input geometry (image height, width and colour; window, stride and
  channels) and its labels in their order, so an agent can shadow it on the same inputs
  and compare their answers. Captured images are resized to it as the agent resizes
  frames. The normalization (mean and std) is learned again from the training data;
- **mixing** (``--mix DATASET``): the original training data joins the captured inputs so
  the candidate does not forget the undrifted distribution. Its inputs carry
  ``--mix-share`` (default 0.8) of the training loss: every captured training input gets
  weight ``(1 - share) * N / n_field`` and every original one ``share * N / n_mix``
  (``N`` = all of them, so the mean weight is 1). Nothing is repeated or dropped; the
  validation split keeps the weights, so early stopping watches the same mixture. The test
  split is the captured test split plus the original one, and ``report.json`` gives the
  accuracy on each part (``retrain.test_accuracy``);
- **version**: with ``--like`` the candidate's version must sort after the serving one
  (agents never move to a lower version); the name defaults to the serving model's.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from stream.bundle import Manifest, now_version, read_manifest
from stream.datasets import Dataset, load_dataset, validate
from stream.exceptions import BundleError, DatasetError
from stream.preprocessing import (
    ImageColor,
    ImagePreprocessing,
    SequencePreprocessing,
    resize_image,
)
from stream.registry import version_key
from stream.settings import KafkaSettings
from trainer.capture import (
    DEFAULT_MAX_MESSAGES,
    DEFAULT_MAX_WINDOW,
    CapturedDataset,
    Target,
    _Capture,
    captured_dataset,
    target_window,
)
from trainer.exceptions import TrainerConfigError
from trainer.feedback import read_feedback
from trainer.kafka_data import CacheMode, KafkaDataset, first_pass, streamed_dataset

logger = logging.getLogger(__name__)

#: Share of the training loss the ``--mix`` dataset carries by default.
DEFAULT_MIX_SHARE = 0.8
#: ``test_origin`` values.
FIELD, MIXED = 0, 1


@dataclass(frozen=True, kw_only=True)
class Like:
    """The serving model a candidate is trained for (``--like BUNDLE_DIR``)."""

    path: Path
    manifest: Manifest

    @property
    def target(self) -> Target:
        m = self.manifest
        return Target(
            preprocessing=m.preprocessing, labels=list(m.labels), source=f"bundle {self.path}"
        )

    def summary(self) -> dict[str, Any]:
        m = self.manifest
        return {
            "bundle": str(self.path),
            "name": m.name,
            "version": m.version,
            "variant": m.variant,
        }


def read_like(path: str | Path) -> Like:
    """The manifest of ``--like BUNDLE_DIR`` (only its geometry, labels, name and version
    are used: nothing of the bundle runs here)."""
    try:
        return Like(path=Path(path), manifest=read_manifest(Path(path)))
    except BundleError as exc:
        msg = f"--like {path}: {exc}"
        raise TrainerConfigError(msg) from exc


def candidate_version(version: str | None, like: Like | None) -> str | None:
    """The version to write: ``version`` (or now, with ``--like``), after the serving one."""
    if like is None:
        return version
    chosen = version or now_version()
    serving = like.manifest.version
    if version_key(chosen) <= version_key(serving):
        msg = (
            f"--version {chosen} does not sort after {serving}, the version of --like "
            f"{like.path}: agents never move to a lower version; pass a higher --version"
        )
        raise TrainerConfigError(msg)
    return chosen


def target_of(ds: Dataset) -> Target:
    """A dataset's geometry and labels as a :class:`Target` (``--mix`` without ``--like``)."""
    from trainer.data import fit_preprocessing

    return Target(
        preprocessing=fit_preprocessing(ds), labels=list(ds.labels), source=f"dataset {ds.name}"
    )


def load_field_data(
    topic: str,
    *,
    settings: KafkaSettings,
    seed: int = 0,
    labels_from: str | None = None,
    mix: str | None = None,
    mix_share: float | None = None,
    like: str | Path | None = None,
    window: int | None = None,
    max_window: int = DEFAULT_MAX_WINDOW,
    max_messages: int = DEFAULT_MAX_MESSAGES,
    timeout_s: float = 30.0,
    image_size: tuple[int, int] | None = None,
    color: ImageColor | None = None,
    cache: CacheMode = "auto",
    test_fraction: float = 0.25,
) -> CapturedDataset | KafkaDataset:
    """``kafka:TOPIC`` with the retraining options (see the module's docstring): in memory
    when its inputs fit (``cache``), else streamed (:mod:`trainer.kafka_data`)."""
    mix_share = DEFAULT_MIX_SHARE if mix_share is None else mix_share
    if not 0.0 <= mix_share < 1.0:
        msg = f"--mix-share {mix_share}: give the original data's share of the loss, 0 <= S < 1"
        raise TrainerConfigError(msg)
    original = load_dataset(mix, seed=seed) if mix else None
    serving = read_like(like) if like else None
    target = serving.target if serving else (target_of(original) if original is not None else None)
    feedback = (
        read_feedback(
            labels_from, settings=settings, max_messages=max_messages, timeout_s=timeout_s
        )
        if labels_from
        else None
    )
    cap = _Capture(
        topic=topic, feedback=feedback, target=target, window=target_window(window, target),
        image_size=image_size, color=color,
    )  # fmt: skip
    first, snapshot = first_pass(
        cap, settings=settings, max_messages=max_messages, timeout_s=timeout_s, seed=seed,
        test_fraction=test_fraction, cache=cache,
    )  # fmt: skip
    like_info = serving.summary() if serving else None
    if first.overflow:
        streamed = streamed_dataset(
            cap, first, settings=settings, snapshot=snapshot, max_messages=max_messages,
            timeout_s=timeout_s, seed=seed, test_fraction=test_fraction,
        )  # fmt: skip
        streamed.capture.update(like=like_info, mix=None)
        if original is not None and target is not None:
            if original.kind != streamed.kind:
                msg = f"--mix {mix} holds {original.kind} data but {topic!r} {streamed.kind} data"
                raise DatasetError(msg)
            x_tr, y_tr, x_te, y_te = in_target(original, target)
            n_field = len(first.fit_u)
            weights = mix_weights(n_field, len(x_tr), mix_share)
            streamed.add_mix(x_tr, y_tr, x_te, y_te, weights=weights)
            streamed.capture["mix"] = mix_summary(
                str(mix), mix_share, (n_field, len(x_tr)),
                (len(first.test.x), len(x_te)), weights,
            )  # fmt: skip
        return streamed
    cap.inputs, cap.names = first.kept, first.kept_names
    field = captured_dataset(cap, max_window=max_window, seed=seed, test_fraction=test_fraction)
    capture = {**field.capture, "like": like_info, "mix": None}
    if original is None or target is None:
        ds = replace(field, capture=capture)
    else:
        ds = mix_datasets(field, original, share=mix_share, target=target)
        ds.capture["mix"]["dataset"] = mix  # the spec, as --mix takes it
        ds.capture["like"] = capture["like"]
    validate(ds)
    return ds


def saved_options(capture: dict[str, Any] | None) -> dict[str, Any]:
    """The ``--labels-from``/``--mix``/``--mix-share``/``--like`` a run used, from its
    ``run.json`` ``capture`` (``edgeinfer export`` reads the topic again with them)."""
    if not capture:
        return {}
    out: dict[str, Any] = {}
    if capture.get("feedback"):
        out["labels_from"] = capture["feedback"]["topic"]
    if capture.get("mix"):
        out["mix"] = capture["mix"]["dataset"]
        out["mix_share"] = capture["mix"]["share"]
    if capture.get("like"):
        out["like"] = capture["like"]["bundle"]
    return out


def mix_datasets(
    field: CapturedDataset, original: Dataset, *, share: float, target: Target
) -> CapturedDataset:
    """The captured inputs plus ``original``'s, in ``target``'s labels, weighted by ``share``."""
    if original.kind != field.kind:
        msg = (
            f"--mix {original.name} holds {original.kind} data but the topic {field.name!r} "
            f"{field.kind} data"
        )
        raise DatasetError(msg)
    x_tr, y_tr, x_te, y_te = in_target(original, target)
    n_field = len(field.x_train)
    w_field, w_mix = mix_weights(n_field, len(x_tr), share)
    weights = np.concatenate([np.full(n_field, w_field), np.full(len(x_tr), w_mix)])
    mix_info = mix_summary(
        original.name, share, (n_field, len(x_tr)), (len(field.x_test), len(x_te)), (w_field, w_mix)
    )
    return CapturedDataset(
        name=field.name,
        kind=field.kind,
        x_train=np.concatenate([field.x_train, x_tr]),
        y_train=np.concatenate([field.y_train, y_tr]),
        x_test=np.concatenate([field.x_test, x_te]),
        y_test=np.concatenate([field.y_test, y_te]),
        labels=list(target.labels),
        capture={**field.capture, "mix": mix_info},
        train_weights=weights.astype(np.float32),
        test_origin=np.concatenate([np.full(len(field.x_test), FIELD), np.full(len(x_te), MIXED)]),
    )


def in_target(
    original: Dataset, target: Target
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``original``'s train and test splits at the target's geometry, in its label ids."""
    missing = [name for name in original.labels if name not in target.labels]
    if missing:
        msg = f"--mix {original.name} has labels {missing} that {target.source} does not know"
        raise DatasetError(msg)
    to_target = np.array([target.labels.index(name) for name in original.labels], dtype=np.int64)
    return (
        _fit(original.x_train, target, original.name),
        to_target[original.y_train],
        _fit(original.x_test, target, original.name),
        to_target[original.y_test],
    )


def mix_weights(n_field: int, n_mix: int, share: float) -> tuple[float, float]:
    """Each captured and each original input's weight: the original carries ``share`` of
    the sum, and the mean weight is 1."""
    total = n_field + n_mix
    w_field = (1.0 - share) * total / n_field if n_field else 0.0
    w_mix = share * total / n_mix if n_mix else 0.0
    return w_field, w_mix


def mix_summary(
    name: str,
    share: float,
    train: tuple[int, int],
    test: tuple[int, int],
    weights: tuple[float, float],
) -> dict[str, Any]:
    """``report.json`` ``capture.mix``."""
    info = {
        "dataset": name,
        "share": share,
        "train": {"field": train[0], "mix": train[1]},
        "test": {"field": test[0], "mix": test[1]},
        "weight": {"field": round(weights[0], 6), "mix": round(weights[1], 6)},
    }
    logger.info('mixed dataset="%s" %s', name, info)
    return info


def _fit(x: np.ndarray, target: Target, name: str) -> np.ndarray:
    """``--mix`` inputs at the target's geometry (images resized as the agent does)."""
    prep = target.preprocessing
    if isinstance(prep, ImagePreprocessing):
        shape = (prep.height, prep.width, prep.channels)
        if x.shape[1:] == shape:
            return x
        return np.stack(
            [
                resize_image(im, height=prep.height, width=prep.width, channels=prep.channels)
                for im in x
            ]
        )
    assert isinstance(prep, SequencePreprocessing)  # noqa: S101  a Target is one of the two
    if x.shape[1:] != (prep.window, prep.channels):
        msg = (
            f"--mix {name} has windows of {x.shape[1]} readings x {x.shape[2]} channels but "
            f"{target.source} takes {prep.window} x {prep.channels}"
        )
        raise DatasetError(msg)
    return x.astype(np.float32)


def accuracy_by_origin(
    model: Any, x_test: np.ndarray, y_test: np.ndarray, ds: Any
) -> dict[str, Any] | None:
    """Keras test accuracy on the captured and on the ``--mix`` part of the test split."""
    origin = getattr(ds, "test_origin", None)
    if origin is None:
        return None
    predicted = np.argmax(model.predict(x_test, verbose=0), axis=1)
    out: dict[str, Any] = {}
    for name, code in (("field", FIELD), ("mix", MIXED)):
        part = origin == code
        out[name] = (
            {
                "accuracy": round(float(np.mean(predicted[part] == y_test[part])), 6),
                "samples": int(part.sum()),
            }
            if part.any()
            else {"accuracy": None, "samples": 0}
        )
    return out
