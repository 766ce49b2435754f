"""Dataset loaders shared by the replayers and the trainer (numpy only, no TensorFlow).

Every dataset is shipped by a package or read from local files: nothing is downloaded.
Images come out as uint8 (N, H, W, C), exactly what a device would encode and send;
sequences as float32 (N, T, C).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from stream.exceptions import DatasetError

logger = logging.getLogger(__name__)

DatasetKind = Literal["image", "sequence"]


@dataclass(frozen=True, kw_only=True)
class Dataset:
    """A labelled dataset with a train and a test split."""

    name: str
    kind: DatasetKind
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    labels: list[str]

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(int(d) for d in self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return len(self.labels)


def load_dataset(spec: str, *, seed: int = 0, test_fraction: float = 0.25) -> Dataset:
    """Load ``digits``, ``basic-motions``, ``aeon:NAME``, ``npz:PATH`` or ``images:DIR``.

    Raises :class:`DatasetError` naming what is wrong (unknown name, missing file, empty,
    one class, shape mismatch, NaN).
    """
    if spec == "digits":
        ds = _digits(seed=seed, test_fraction=test_fraction)
    elif spec in ("basic-motions", "basicmotions", "BasicMotions"):
        ds = _aeon("BasicMotions", name="basic-motions")
    elif spec.startswith("aeon:"):
        ds = _aeon(spec[len("aeon:") :])
    elif spec.startswith("npz:"):
        ds = _npz(Path(spec[4:]), seed=seed, test_fraction=test_fraction)
    elif spec.startswith("images:"):
        ds = _image_folder(Path(spec[7:]), seed=seed, test_fraction=test_fraction)
    else:
        msg = (
            f"unknown dataset {spec!r}: use digits, basic-motions, aeon:NAME, npz:PATH, "
            "images:DIR or (for training) kafka:TOPIC"
        )
        raise DatasetError(msg)
    validate(ds)
    return ds


def validate(ds: Dataset) -> None:
    """Check a dataset is usable for training; raise :class:`DatasetError` otherwise."""
    for split, x, y in (("train", ds.x_train, ds.y_train), ("test", ds.x_test, ds.y_test)):
        if len(x) == 0:
            msg = f"dataset {ds.name!r}: the {split} split is empty"
            raise DatasetError(msg)
        if len(x) != len(y):
            msg = f"dataset {ds.name!r}: {split} has {len(x)} inputs but {len(y)} labels"
            raise DatasetError(msg)
        if x.dtype.kind == "f" and not np.isfinite(x).all():
            bad = int((~np.isfinite(x)).reshape(len(x), -1).any(axis=1).sum())
            msg = (
                f"dataset {ds.name!r}: {bad} {split} samples contain NaN or infinity; "
                "clean or impute them"
            )
            raise DatasetError(msg)
        if y.min(initial=0) < 0 or y.max(initial=0) >= len(ds.labels):
            msg = f"dataset {ds.name!r}: {split} labels must be in 0..{len(ds.labels) - 1}"
            raise DatasetError(msg)
    expected = 4 if ds.kind == "image" else 3
    if ds.x_train.ndim != expected:
        want = "(N, H, W, C)" if ds.kind == "image" else "(N, T, C)"
        msg = f"dataset {ds.name!r}: {ds.kind} data must be shaped {want}, got {ds.x_train.shape}"
        raise DatasetError(msg)
    if ds.x_train.shape[1:] != ds.x_test.shape[1:]:
        msg = (
            f"dataset {ds.name!r}: train samples are {ds.x_train.shape[1:]} but test samples "
            f"are {ds.x_test.shape[1:]}"
        )
        raise DatasetError(msg)
    if len(np.unique(ds.y_train)) < 2:
        msg = f"dataset {ds.name!r}: the training split has fewer than two classes"
        raise DatasetError(msg)


def stratified_split(
    x: np.ndarray, y: np.ndarray, *, test_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Split keeping each class's share; every class with >= 2 samples gets a test sample."""
    rng = np.random.default_rng(seed)
    train_idx: list[int] = []
    test_idx: list[int] = []
    for cls in np.unique(y):
        idx = np.flatnonzero(y == cls)
        rng.shuffle(idx)
        n_test = int(round(len(idx) * test_fraction))
        if len(idx) >= 2:
            n_test = min(max(n_test, 1), len(idx) - 1)
        else:
            n_test = 0
        test_idx.extend(idx[:n_test].tolist())
        train_idx.extend(idx[n_test:].tolist())
    tr = np.array(sorted(train_idx), dtype=np.int64)
    te = np.array(sorted(test_idx), dtype=np.int64)
    return x[tr], y[tr], x[te], y[te]


def digits_to_uint8(images: np.ndarray) -> np.ndarray:
    """scikit-learn digits (values 0..16, shape (N, 8, 8)) -> uint8 (N, 8, 8, 1) grey images."""
    scaled = np.round(np.asarray(images, dtype=np.float64) * (255.0 / 16.0))
    return np.clip(scaled, 0, 255).astype(np.uint8)[..., np.newaxis]


def _digits(*, seed: int, test_fraction: float) -> Dataset:
    try:
        from sklearn.datasets import load_digits
    except ModuleNotFoundError as exc:
        msg = "the digits dataset needs scikit-learn: pip install 'edgeinfer[datasets]'"
        raise DatasetError(msg) from exc
    raw = load_digits()
    x = digits_to_uint8(raw.images)
    y = np.asarray(raw.target, dtype=np.int64)
    x_tr, y_tr, x_te, y_te = stratified_split(x, y, test_fraction=test_fraction, seed=seed)
    return Dataset(
        name="digits",
        kind="image",
        x_train=x_tr,
        y_train=y_tr,
        x_test=x_te,
        y_test=y_te,
        labels=[str(i) for i in range(10)],
    )


#: Classification datasets aeon ships inside its wheel (nothing is downloaded): name -> loader.
AEON_DATASETS = {
    "ACSF1": "load_acsf1",
    "ArrowHead": "load_arrow_head",
    "BasicMotions": "load_basic_motions",
    "GunPoint": "load_gunpoint",
    "ItalyPowerDemand": "load_italy_power_demand",
    "JapaneseVowels": "load_japanese_vowels",
    "PickupGestureWiimoteZ": "load_pickup_gesture_wiimoteZ",
}


def _aeon(requested: str, *, name: str | None = None) -> Dataset:
    """A dataset shipped with aeon, with its own train/test split.

    aeon gives (N, channels, time); the wire and the models use (N, time, channels). Series
    of unequal length (JapaneseVowels, PickupGestureWiimoteZ) are padded at the end to the
    longest one by repeating their last reading.
    """
    key = {k.lower(): k for k in AEON_DATASETS}.get(requested.lower().replace("-", ""))
    if key is None:
        msg = f"aeon:{requested} is not shipped with aeon; use one of {', '.join(AEON_DATASETS)}"
        raise DatasetError(msg)
    try:
        import aeon.datasets
    except ModuleNotFoundError as exc:
        msg = f"aeon:{key} needs aeon: pip install 'edgeinfer[datasets]'"
        raise DatasetError(msg) from exc
    load = getattr(aeon.datasets, AEON_DATASETS[key])
    x_tr, y_tr_raw = load(split="train")
    x_te, y_te_raw = load(split="test")
    length = max(int(np.shape(x)[-1]) for x in [*x_tr, *x_te])
    labels = sorted({str(v) for v in y_tr_raw} | {str(v) for v in y_te_raw})
    index = {label: i for i, label in enumerate(labels)}
    return Dataset(
        name=name or key,
        kind="sequence",
        x_train=_time_major(x_tr, length),
        y_train=np.array([index[str(v)] for v in y_tr_raw], dtype=np.int64),
        x_test=_time_major(x_te, length),
        y_test=np.array([index[str(v)] for v in y_te_raw], dtype=np.int64),
        labels=labels,
    )


def _time_major(series: Any, length: int) -> np.ndarray:
    """(channels, time) series -> float32 (N, length, channels), padded with the last reading."""
    out = []
    for one in series:
        arr = np.asarray(one, dtype=np.float32)
        pad = length - arr.shape[1]
        if pad:
            arr = np.pad(arr, ((0, 0), (0, pad)), mode="edge")
        out.append(arr.T)
    return np.stack(out).astype(np.float32)


def _npz(path: Path, *, seed: int, test_fraction: float) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except FileNotFoundError:
        msg = f"npz file {path} does not exist"
        raise DatasetError(msg) from None
    except (OSError, ValueError) as exc:
        msg = f"cannot read {path} as .npz ({exc}); save it with numpy.savez(x=..., y=...)"
        raise DatasetError(msg) from exc
    for key in ("x", "y"):
        if key not in arrays:
            msg = f"{path} has no array {key!r}; it holds {sorted(arrays)} (need x and y)"
            raise DatasetError(msg)
    x, y = arrays["x"], arrays["y"]
    if x.ndim == 3:
        kind: DatasetKind = "sequence"
        x = x.astype(np.float32)
    elif x.ndim == 4:
        kind = "image"
        if x.dtype != np.uint8:
            msg = f"{path}: images (N, H, W, C) must be uint8 0..255, got {x.dtype}"
            raise DatasetError(msg)
    else:
        msg = f"{path}: x must be (N, T, C) for sequences or (N, H, W, C) for images, got {x.shape}"
        raise DatasetError(msg)
    if len(x) == 0:
        msg = f"{path}: x is empty"
        raise DatasetError(msg)
    if y.ndim != 1 or y.dtype.kind not in "iu":
        msg = f"{path}: y must be a 1-D array of integer class ids, got {y.dtype} {y.shape}"
        raise DatasetError(msg)
    if len(x) != len(y):
        msg = f"{path}: x has {len(x)} samples but y has {len(y)}"
        raise DatasetError(msg)
    y = y.astype(np.int64)
    n_classes = int(max(y.max(), arrays["y_test"].max() if "y_test" in arrays else 0)) + 1
    labels = (
        [str(v) for v in arrays["labels"].tolist()]
        if "labels" in arrays
        else [str(i) for i in range(n_classes)]
    )
    if "x_test" in arrays and "y_test" in arrays:
        x_te = arrays["x_test"].astype(x.dtype)
        y_te = arrays["y_test"].astype(np.int64)
        x_tr, y_tr = x, y
    else:
        x_tr, y_tr, x_te, y_te = stratified_split(x, y, test_fraction=test_fraction, seed=seed)
    return Dataset(
        name=path.stem,
        kind=kind,
        x_train=x_tr,
        y_train=y_tr,
        x_test=x_te,
        y_test=y_te,
        labels=labels,
    )


def _image_folder(root: Path, *, seed: int, test_fraction: float) -> Dataset:
    """Every usable image of the folder, fitted to one size (:mod:`stream.image_folder`)."""
    from stream.image_folder import choose_geometry, load_images, scan_folder

    folder = scan_folder(root)
    train_files, test_files = folder.split(seed=seed, test_fraction=test_fraction)
    geometry = choose_geometry(train_files)
    x_tr, y_tr, skipped = load_images(train_files, geometry)
    x_te, y_te, skipped_test = load_images(test_files, geometry)
    skipped = folder.skipped + skipped + skipped_test
    if skipped:
        logger.warning(
            'images skipped root="%s" count=%d first="%s: %s"',
            root, len(skipped), skipped[0].path, skipped[0].reason,
        )  # fmt: skip
    return Dataset(
        name=root.name,
        kind="image",
        x_train=x_tr,
        y_train=y_tr,
        x_test=x_te,
        y_test=y_te,
        labels=folder.labels,
    )
