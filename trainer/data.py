"""Training data: the dataset, the preprocessing learned from it, and the tf.data pipelines.

Model inputs are built with the exact numpy code the agent runs
(:meth:`ImagePreprocessing.apply` / :meth:`SequencePreprocessing.apply`), so the model sees
the same numbers in training and on the device. Arrays (``digits``, ``basic-motions``,
``npz:``, ``kafka:``) are preprocessed in memory (:class:`ModelData`); an image folder
(``images:DIR``) is streamed from its files (:mod:`trainer.folder_data`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stream.datasets import Dataset, load_dataset, stratified_split
from stream.exceptions import DatasetError
from stream.preprocessing import (
    ImageColor,
    ImagePreprocessing,
    Preprocessing,
    SequencePreprocessing,
)
from trainer.folder_data import (
    CacheMode,
    FolderData,
    FolderDataset,
    fit_folder_preprocessing,
    folder_model_data,
    load_folder_dataset,
)
from trainer.kafka_data import KafkaData, KafkaDataset, kafka_model_data

logger = logging.getLogger(__name__)

#: A channel whose spread is below this is not scaled (avoids dividing by ~0).
MIN_STD = 1e-6


#: What training reads: arrays in memory, an image folder streamed from its files, or a
#: topic streamed from Kafka.
TrainingDataset = Dataset | FolderDataset | KafkaDataset


def load_training_data(
    spec: str,
    *,
    seed: int = 0,
    image_size: tuple[int, int] | None = None,
    color: ImageColor | None = None,
    **kafka_options: Any,
) -> TrainingDataset:
    """``load_dataset`` plus ``kafka:TOPIC`` (a topic written by ``edgeinfer replay``).

    ``images:DIR`` is only scanned here (:func:`trainer.folder_data.load_folder_dataset`):
    its files are decoded while training. ``image_size`` (H, W) and ``color`` apply to it.
    """
    if spec.startswith("images:"):
        return load_folder_dataset(
            Path(spec[len("images:") :]), seed=seed, image_size=image_size, color=color
        )
    if spec.startswith("kafka:"):
        from trainer.retrain import load_field_data

        return load_field_data(
            spec[len("kafka:") :], seed=seed, image_size=image_size, color=color, **kafka_options
        )
    return load_dataset(spec, seed=seed)


def fit_preprocessing(
    ds: TrainingDataset, *, stride: int | None = None, seed: int = 0
) -> Preprocessing:
    """Learn the preprocessing from the training split (per-channel mean and std)."""
    if isinstance(ds, FolderDataset):
        return fit_folder_preprocessing(ds, seed=seed)
    if isinstance(ds, KafkaDataset):
        return ds.preprocessing(stride=stride)
    x = ds.x_train
    if ds.kind == "image":
        if x.dtype != np.uint8:
            msg = f"dataset {ds.name!r}: images must be uint8 (N, H, W, C), got {x.dtype}"
            raise DatasetError(msg)
        channels = int(x.shape[3])
        if channels not in (1, 3):
            msg = f"dataset {ds.name!r}: images need 1 (grey) or 3 (RGB) channels, got {channels}"
            raise DatasetError(msg)
        scaled = x.reshape(-1, channels).astype(np.float64) / 255.0
        return ImagePreprocessing(
            height=int(x.shape[1]),
            width=int(x.shape[2]),
            channels=channels,
            color="L" if channels == 1 else "RGB",
            mean=[float(v) for v in scaled.mean(axis=0)],
            std=[float(max(v, MIN_STD)) for v in scaled.std(axis=0)],
        )
    window = int(x.shape[1])
    if stride is not None and not 1 <= stride:
        msg = f"--stride must be >= 1 (readings between inferences), got {stride}"
        raise DatasetError(msg)
    flat = x.reshape(-1, x.shape[2]).astype(np.float64)
    return SequencePreprocessing(
        window=window,
        stride=int(stride or window),
        channels=int(x.shape[2]),
        mean=[float(v) for v in flat.mean(axis=0)],
        std=[float(max(v, MIN_STD)) for v in flat.std(axis=0)],
    )


@dataclass(frozen=True, kw_only=True)
class ModelData:
    """Preprocessed float32 model inputs: train/validation for fit, test for evaluation."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    #: Each input's weight in the loss (``--mix``, :mod:`trainer.retrain`); None: all 1.
    w_train: np.ndarray | None = None
    w_val: np.ndarray | None = None
    streamed: bool = field(default=False, init=False)

    @property
    def n_train(self) -> int:
        return len(self.x_train)

    @property
    def n_val(self) -> int:
        return len(self.x_val)

    def train_dataset(self, *, batch_size: int, seed: int) -> Any:
        return tf_dataset(
            self.x_train, self.y_train, batch_size=batch_size, shuffle=True, seed=seed,
            weights=self.w_train,
        )  # fmt: skip

    def val_dataset(self, *, batch_size: int) -> Any:
        return tf_dataset(
            self.x_val, self.y_val, batch_size=batch_size, shuffle=False, seed=0,
            weights=self.w_val,
        )  # fmt: skip

    @property
    def x_fit(self) -> np.ndarray:
        """Every training input (train + validation): calibration data for int8."""
        return np.concatenate([self.x_train, self.x_val])

    @property
    def y_fit(self) -> np.ndarray:
        return np.concatenate([self.y_train, self.y_val])


#: Model inputs: preprocessed arrays, or batches streamed from files or a topic.
ModelInputs = ModelData | FolderData | KafkaData


def model_data(
    ds: TrainingDataset,
    prep: Preprocessing,
    *,
    validation_fraction: float,
    seed: int,
    cache: CacheMode = "auto",
) -> ModelInputs:
    """Apply ``prep`` and split a stratified validation set off the training split.

    ``cache`` applies to image folders (:func:`trainer.folder_data.folder_model_data`).
    """
    if not 0 < validation_fraction < 1:
        msg = f"--validation-split must be between 0 and 1, got {validation_fraction}"
        raise DatasetError(msg)
    if isinstance(ds, FolderDataset):
        if not isinstance(prep, ImagePreprocessing):
            msg = f"dataset {ds.name!r}: an image folder needs image preprocessing"
            raise DatasetError(msg)
        return folder_model_data(
            ds, prep, validation_fraction=validation_fraction, seed=seed, cache=cache
        )
    if isinstance(ds, KafkaDataset):
        return kafka_model_data(ds, prep, validation_fraction=validation_fraction)
    # Split positions, so that per-input weights (``--mix``) follow their inputs.
    i_tr, y_tr, i_val, y_val = stratified_split(
        np.arange(len(ds.y_train)), ds.y_train, test_fraction=validation_fraction, seed=seed
    )
    x_tr, x_val = ds.x_train[i_tr], ds.x_train[i_val]
    weights = getattr(ds, "train_weights", None)
    if len(x_val) == 0:
        msg = (
            f"dataset {ds.name!r}: too few training samples ({len(ds.x_train)}) to hold out a "
            "validation split; every class needs at least 2 samples"
        )
        raise DatasetError(msg)
    return ModelData(
        x_train=prep.apply(x_tr),
        y_train=y_tr,
        x_val=prep.apply(x_val),
        y_val=y_val,
        x_test=prep.apply(ds.x_test),
        y_test=ds.y_test,
        w_train=None if weights is None else weights[i_tr],
        w_val=None if weights is None else weights[i_val],
    )


def tf_dataset(
    x: np.ndarray,
    y: np.ndarray,
    *,
    batch_size: int,
    shuffle: bool,
    seed: int,
    weights: np.ndarray | None = None,
) -> Any:
    """A batched, prefetched ``tf.data.Dataset`` (shuffled each epoch with a fixed seed);
    with ``weights``, elements are ``(x, y, weight)`` (Keras sample weights)."""
    import tensorflow as tf

    columns: tuple[np.ndarray, ...] = (x, y.astype(np.int32))
    if weights is not None:
        columns = (*columns, weights.astype(np.float32))
    data = tf.data.Dataset.from_tensor_slices(columns)
    if shuffle:
        data = data.shuffle(len(x), seed=seed, reshuffle_each_iteration=True)
    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = True
    return data.batch(batch_size).prefetch(tf.data.AUTOTUNE).with_options(options)
