"""``images:DIR`` for training: files streamed through ``tf.data``, never all in memory.

The folder is scanned (headers only, :func:`stream.image_folder.scan_folder`), the model's
input size and colour chosen, and the preprocessing learned from a sample of the training
files. Training and validation batches are then decoded from the files as ``tf.data``
consumes them: each file is read, decoded and fitted by :func:`stream.image_folder.read_image`
(the agent's decoder and resize) and normalized by :meth:`ImagePreprocessing.apply` (the
agent's arithmetic). The fitted uint8 images are cached in memory when they fit in
:data:`MEMORY_CACHE_BYTES` (``cache="auto"``), else decoded again every epoch. Only the test
split and a calibration sample are held as arrays, at the model's size: the LiteRT
evaluation and the int8 converter take arrays.

A file that fails to decode at any point is left out and recorded (``skipped_files``).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from stream.exceptions import DatasetError
from stream.image_folder import (
    ImageFile,
    ImageFileError,
    ImageFolder,
    ImageGeometry,
    SkippedFile,
    choose_geometry,
    load_images,
    map_files,
    read_image,
    scan_folder,
    stratified_files,
)
from stream.preprocessing import ImageColor, ImagePreprocessing

logger = logging.getLogger(__name__)

CacheMode = Literal["auto", "memory", "none"]
CACHE_MODES: tuple[CacheMode, ...] = ("auto", "memory", "none")
#: ``cache="auto"`` keeps the fitted uint8 training images in memory up to this size.
MEMORY_CACHE_BYTES = 256 * 1024 * 1024
#: The preprocessing (per-channel mean and std) is learned from at most this many files.
STATS_SAMPLE = 2000
#: Training images decoded for int8 calibration (the converter uses up to 200 of them).
CALIBRATION_SAMPLE = 400
#: Smallest std of a channel (as :data:`trainer.data.MIN_STD`).
MIN_STD = 1e-6


class SkipLog:
    """The files left out, in the order met, each once (thread-safe: tf.data decodes in threads)."""

    def __init__(self, initial: list[SkippedFile] | None = None) -> None:
        self._lock = threading.Lock()
        self._items: dict[str, SkippedFile] = {}
        for item in initial or []:
            self.add(item)

    def add(self, item: SkippedFile) -> None:
        with self._lock:
            self._items.setdefault(item.path, item)

    def paths(self) -> set[str]:
        with self._lock:
            return set(self._items)

    def to_list(self) -> list[dict[str, str]]:
        with self._lock:
            return [item.to_dict() for item in self._items.values()]

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


@dataclass(kw_only=True)
class FolderDataset:
    """An image folder ready to train on: the file lists, the input geometry, the skips."""

    name: str
    folder: ImageFolder
    geometry: ImageGeometry
    train_files: list[ImageFile]
    test_files: list[ImageFile]
    skipped: SkipLog
    kind: Literal["image"] = "image"
    #: Fitted uint8 training images decoded for calibration (set by :func:`folder_model_data`).
    sample: np.ndarray | None = None

    @property
    def x_train(self) -> np.ndarray:
        """A sample of the fitted uint8 training images (at most :data:`CALIBRATION_SAMPLE`).

        For statistics of the training inputs (the manifest's drift reference); the whole
        split is never held in memory.
        """
        if self.sample is None:
            files = _sample(self.train_files, CALIBRATION_SAMPLE, seed=0)
            self.sample, _ = _load(self, files)
        return self.sample

    @property
    def labels(self) -> list[str]:
        return self.folder.labels

    @property
    def num_classes(self) -> int:
        return len(self.folder.labels)

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.geometry.shape

    def drop_skipped(self) -> None:
        """Forget the files found unreadable so far (they stay in :attr:`skipped`)."""
        bad = self.skipped.paths()
        self.train_files = [f for f in self.train_files if str(f.path) not in bad]
        self.test_files = [f for f in self.test_files if str(f.path) not in bad]


def load_folder_dataset(
    root: Path,
    *,
    seed: int = 0,
    test_fraction: float = 0.25,
    image_size: tuple[int, int] | None = None,
    color: ImageColor | None = None,
) -> FolderDataset:
    """Scan ``root`` (headers only) and choose the input geometry; nothing is decoded."""
    folder = scan_folder(root)
    train_files, test_files = folder.split(seed=seed, test_fraction=test_fraction)
    if not test_files:
        msg = f"image folder {root}: too few images to hold out a test split"
        raise DatasetError(msg)
    geometry = choose_geometry(train_files, image_size=image_size, color=color)
    ds = FolderDataset(
        name=root.name,
        folder=folder,
        geometry=geometry,
        train_files=train_files,
        test_files=test_files,
        skipped=SkipLog(folder.skipped),
    )
    logger.info(
        'image folder root="%s" train=%d test=%d skipped=%d classes=%d input=%dx%d color=%s',
        root, len(train_files), len(test_files), len(ds.skipped), ds.num_classes,
        geometry.height, geometry.width, geometry.color,
    )  # fmt: skip
    return ds


def fit_folder_preprocessing(ds: FolderDataset, *, seed: int = 0) -> ImagePreprocessing:
    """Per-channel mean and std of pixels/255 over (a sample of) the training files.

    One streaming pass: sums per channel, no image kept. Files that fail to decode are
    recorded and dropped from the dataset.
    """
    files = _sample(ds.train_files, STATS_SAMPLE, seed=seed)
    channels = ds.geometry.channels
    total = np.zeros(channels, dtype=np.float64)
    squares = np.zeros(channels, dtype=np.float64)
    count = 0
    for result in map_files(files, ds.geometry):
        if isinstance(result, SkippedFile):
            ds.skipped.add(result)
            continue
        scaled = result.reshape(-1, channels).astype(np.float64) / 255.0
        total += scaled.sum(axis=0)
        squares += np.square(scaled).sum(axis=0)
        count += len(scaled)
    ds.drop_skipped()
    if count == 0:
        msg = f"image folder {ds.folder.root}: none of the sampled training images decodes"
        raise DatasetError(msg)
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - np.square(mean), 0.0))
    return ImagePreprocessing(
        height=ds.geometry.height,
        width=ds.geometry.width,
        channels=channels,
        color=ds.geometry.color,
        mean=[float(v) for v in mean],
        std=[float(max(v, MIN_STD)) for v in std],
    )


def _sample(files: list[ImageFile], n: int, *, seed: int) -> list[ImageFile]:
    if len(files) <= n:
        return list(files)
    keep = np.sort(np.random.default_rng(seed).choice(len(files), size=n, replace=False))
    return [files[i] for i in keep]


@dataclass(kw_only=True)
class FolderData:
    """The streaming counterpart of :class:`trainer.data.ModelData`.

    ``x_fit``/``y_fit`` are a calibration sample of the training files and ``x_test``/``y_test``
    the whole test split, both preprocessed arrays at the model's size; training and
    validation batches come from :meth:`train_dataset` and :meth:`val_dataset`.
    """

    train_files: list[ImageFile]
    val_files: list[ImageFile]
    preprocessing: ImagePreprocessing
    geometry: ImageGeometry
    x_fit: np.ndarray
    y_fit: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    skipped: SkipLog
    cache: Literal["memory", "none"]
    streamed: bool = field(default=True, init=False)

    @property
    def n_train(self) -> int:
        return len(self.train_files)

    @property
    def n_val(self) -> int:
        return len(self.val_files)

    def train_dataset(self, *, batch_size: int, seed: int) -> Any:
        return self._dataset(self.train_files, batch_size=batch_size, shuffle=True, seed=seed)

    def val_dataset(self, *, batch_size: int) -> Any:
        return self._dataset(self.val_files, batch_size=batch_size, shuffle=False, seed=0)

    def _dataset(self, files: list[ImageFile], *, batch_size: int, shuffle: bool, seed: int) -> Any:
        import tensorflow as tf

        geometry, skipped, prep = self.geometry, self.skipped, self.preprocessing

        def load(path: bytes) -> tuple[np.ndarray, np.bool_]:
            name = path.decode()
            try:
                return read_image(Path(name), geometry), np.bool_(True)
            except ImageFileError as exc:
                skipped.add(SkippedFile(name, str(exc)))
                return np.zeros(geometry.shape, dtype=np.uint8), np.bool_(False)

        def decode(path: Any, label: Any) -> tuple[Any, Any, Any]:
            pixels, ok = tf.numpy_function(load, [path], [tf.uint8, tf.bool], stateful=False)
            pixels.set_shape(geometry.shape)
            ok.set_shape(())
            return pixels, label, ok

        def readable(pixels: Any, label: Any, ok: Any) -> Any:
            return ok

        def drop_flag(pixels: Any, label: Any, ok: Any) -> tuple[Any, Any]:
            return pixels, label

        def normalize(pixels: Any, label: Any) -> tuple[Any, Any]:
            x = tf.numpy_function(prep.apply, [pixels], tf.float32, stateful=False)
            x.set_shape((None, *geometry.shape))
            return x, label

        paths = [str(f.path) for f in files]
        labels = np.array([f.label for f in files], dtype=np.int32)
        data = tf.data.Dataset.from_tensor_slices((paths, labels))
        cached = self.cache == "memory"
        if shuffle and not cached:  # shuffle the names: nothing decoded waits in a buffer
            data = data.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
        data = data.map(decode, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
        data = data.filter(readable).map(drop_flag)
        if cached:
            data = data.cache()
            if shuffle:
                data = data.shuffle(len(files), seed=seed, reshuffle_each_iteration=True)
        data = data.batch(batch_size).map(normalize, num_parallel_calls=tf.data.AUTOTUNE)
        return finish_pipeline(data)


def finish_pipeline(data: Any) -> Any:
    """Prefetch, keep the order, and shard batches by data over several workers: how every
    streamed pipeline (folders, topics) ends."""
    import tensorflow as tf

    options = tf.data.Options()
    options.experimental_distribute.auto_shard_policy = tf.data.experimental.AutoShardPolicy.DATA
    options.deterministic = True
    return data.prefetch(tf.data.AUTOTUNE).with_options(options)


def folder_model_data(
    ds: FolderDataset,
    prep: ImagePreprocessing,
    *,
    validation_fraction: float,
    seed: int,
    cache: CacheMode = "auto",
) -> FolderData:
    """Split off a stratified validation set and load the test split and a calibration sample."""
    if cache not in CACHE_MODES:
        msg = f"--cache {cache!r}: use one of {', '.join(CACHE_MODES)}"
        raise DatasetError(msg)
    train_files, val_files = stratified_files(
        ds.train_files, test_fraction=validation_fraction, seed=seed
    )
    if not val_files:
        msg = (
            f"dataset {ds.name!r}: too few training images ({len(ds.train_files)}) to hold out "
            "a validation split; every class needs at least 2 images"
        )
        raise DatasetError(msg)
    x_cal, y_cal = _load(ds, _sample(train_files, CALIBRATION_SAMPLE, seed=seed))
    ds.sample = x_cal
    x_test, y_test = _load(ds, ds.test_files)
    if len(x_test) == 0:
        msg = f"dataset {ds.name!r}: no test image decodes"
        raise DatasetError(msg)
    fitted_bytes = (len(train_files) + len(val_files)) * int(np.prod(ds.geometry.shape))
    chosen: Literal["memory", "none"] = (
        "memory" if cache == "memory" or (cache == "auto" and fitted_bytes <= MEMORY_CACHE_BYTES)
        else "none"
    )  # fmt: skip
    logger.info(
        'streaming images train=%d validation=%d test=%d fitted_mb=%.1f cache=%s',
        len(train_files), len(val_files), len(x_test), fitted_bytes / 2**20, chosen,
    )  # fmt: skip
    return FolderData(
        train_files=train_files,
        val_files=val_files,
        preprocessing=prep,
        geometry=ds.geometry,
        x_fit=prep.apply(x_cal) if len(x_cal) else np.zeros((0, *ds.geometry.shape), np.float32),
        y_fit=y_cal,
        x_test=prep.apply(x_test),
        y_test=y_test,
        skipped=ds.skipped,
        cache=chosen,
    )


def _load(ds: FolderDataset, files: list[ImageFile]) -> tuple[np.ndarray, np.ndarray]:
    x, y, skipped = load_images(files, ds.geometry)
    for item in skipped:
        ds.skipped.add(item)
    return x, y
