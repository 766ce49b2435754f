"""``kafka:TOPIC`` for training: inputs in memory when they fit, else streamed every epoch.

The first pass over the topic (:func:`first_pass`) decodes, labels and fits every input
(:mod:`trainer.capture`) and, at the same time, gathers what training needs without
keeping the inputs:

- the split: each input's place in the topic, ``(partition, offset)`` of its (last)
  message, hashed with the seed (BLAKE2b) to ``u`` in [0, 1): test when ``u`` is below the
  test fraction, else validation or training by the rest of ``u`` against the validation
  fraction. The same input lands in the same split in every pass and every run;
- per-channel sums of the training and validation inputs, for the preprocessing's mean and
  std (images: pixels / 255, as the folders' statistics);
- the test split (at most :data:`MAX_TEST_INPUTS`, a seeded reservoir sample beyond) and a
  calibration sample of :data:`CALIBRATION_SAMPLE` training inputs, as arrays at the
  model's size: LiteRT evaluation, the int8 converter and the reference statistics take
  arrays.

It also keeps the fitted inputs while they fit in :data:`MEMORY_BYTES` (``--cache auto``;
``memory``: always; ``none``: never). When they all fit, training is the in-memory path of
every other array dataset (stratified split, :class:`trainer.capture.CapturedDataset`).
Otherwise :class:`KafkaData` streams: every epoch reads the topic again up to the first
pass's ends (:func:`trainer.topic_read.read_topic`, partition by partition, so every pass
yields the same inputs in the same order), keeps the inputs of the split it serves
(images and samples of the other splits are skipped before decoding), and feeds them to
``tf.data`` through a bounded shuffle buffer (:data:`SHUFFLE_BYTES`). With ``--mix`` the
original training data (in memory, it is a dataset of its own) is interleaved at random in
proportion to the counts, with the weights of :mod:`trainer.retrain`. Memory is the
buffer, the test and calibration arrays and one partition's fetch, whatever the topic's
size.
"""

from __future__ import annotations

import hashlib
import logging
from array import array
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from stream.datasets import stratified_split
from stream.exceptions import DatasetError
from stream.preprocessing import ImagePreprocessing, Preprocessing, SequencePreprocessing
from stream.settings import KafkaSettings
from trainer.capture import Place, _Capture, run_pass
from trainer.folder_data import finish_pipeline
from trainer.topic_read import TopicSnapshot, read_topic

logger = logging.getLogger(__name__)

CacheMode = Literal["auto", "memory", "none"]
#: ``--cache auto`` keeps the fitted inputs in memory up to this size (as image folders).
MEMORY_BYTES = 256 * 1024 * 1024
#: The streamed test split is evaluated on at most this many inputs.
MAX_TEST_INPUTS = 20_000
#: Training inputs kept for int8 calibration and the reference statistics.
CALIBRATION_SAMPLE = 400
#: The shuffle buffer of a streamed epoch holds about this many bytes of inputs.
SHUFFLE_BYTES = 64 * 1024 * 1024
MIN_SHUFFLE, MAX_SHUFFLE = 64, 20_000
MIN_STD = 1e-6

Split = Literal["train", "val", "test"]


def place_hash(place: Place, seed: int) -> float:
    """A stable number in [0, 1) for an input's place in the topic."""
    digest = hashlib.blake2b(f"{seed}:{place[0]}:{place[1]}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") / 2**64


def split_of(place: Place, *, seed: int, test_fraction: float, validation_fraction: float) -> Split:
    u = place_hash(place, seed)
    if u < test_fraction:
        return "test"
    return "val" if (u - test_fraction) / (1.0 - test_fraction) < validation_fraction else "train"


@dataclass
class _Reservoir:
    """A uniform sample of at most ``size`` inputs (Vitter's algorithm R, seeded)."""

    size: int
    rng: np.random.Generator
    x: list[np.ndarray] = field(default_factory=list)
    names: list[str] = field(default_factory=list)
    seen: int = 0

    def add(self, x: np.ndarray, name: str) -> None:
        self.seen += 1
        if len(self.x) < self.size:
            self.x.append(x)
            self.names.append(name)
            return
        j = int(self.rng.integers(self.seen))
        if j < self.size:
            self.x[j], self.names[j] = x, name


@dataclass
class _FirstPass:
    """The sink of the first pass: keeps inputs while they fit, gathers the rest always."""

    seed: int
    test_fraction: float
    budget: int | None
    kept: list[np.ndarray] = field(default_factory=list)
    kept_names: list[str] = field(default_factory=list)
    kept_bytes: int = 0
    overflow: bool = False
    sums: np.ndarray | None = None
    squares: np.ndarray | None = None
    values: int = 0
    #: ``u`` of every training/validation input (the validation split is cut later).
    fit_u: array[float] = field(default_factory=lambda: array("d"))
    labels: set[str] = field(default_factory=set)
    test: _Reservoir = field(init=False)
    calibration: _Reservoir = field(init=False)

    def __post_init__(self) -> None:
        self.test = _Reservoir(MAX_TEST_INPUTS, np.random.default_rng(self.seed))
        self.calibration = _Reservoir(CALIBRATION_SAMPLE, np.random.default_rng(self.seed + 1))

    def __call__(self, x: np.ndarray, name: str, place: Place) -> None:
        self.labels.add(name)
        if not self.overflow:
            self.kept.append(x)
            self.kept_names.append(name)
            self.kept_bytes += x.nbytes
            if self.budget is not None and self.kept_bytes > self.budget:
                self.overflow = True
                self.kept, self.kept_names = [], []
                logger.info("topic over the memory budget bytes=%d: streaming it", self.budget)
        u = place_hash(place, self.seed)
        if u < self.test_fraction:
            self.test.add(x, name)
            return
        self.fit_u.append((u - self.test_fraction) / (1.0 - self.test_fraction))
        self.calibration.add(x, name)
        flat = x.reshape(-1, x.shape[-1]).astype(np.float64)
        if x.dtype == np.uint8:
            flat /= 255.0
        if self.sums is None or self.squares is None:
            self.sums, self.squares = np.zeros(flat.shape[1]), np.zeros(flat.shape[1])
        self.sums += flat.sum(axis=0)
        self.squares += np.square(flat).sum(axis=0)
        self.values += len(flat)


def first_pass(
    cap: _Capture,
    *,
    settings: KafkaSettings,
    max_messages: int,
    timeout_s: float,
    seed: int,
    test_fraction: float,
    cache: CacheMode,
) -> tuple[_FirstPass, TopicSnapshot]:
    """Run ``cap`` over its topic with a :class:`_FirstPass` sink (see the module)."""
    budget = {"auto": MEMORY_BYTES, "memory": None, "none": 0}[cache]
    sink = _FirstPass(seed=seed, test_fraction=test_fraction, budget=budget)
    cap.sink = sink
    if cap.window is None:
        cap.max_held = budget
    snap = run_pass(cap, settings=settings, max_messages=max_messages, timeout_s=timeout_s)
    cap.sink = None
    return sink, snap


@dataclass(frozen=True, kw_only=True)
class _Reader:
    """How to read the topic again: the capture's settings and the first pass's ends."""

    cap: dict[str, Any]
    settings: KafkaSettings
    snapshot: TopicSnapshot
    max_messages: int
    timeout_s: float

    def inputs(self, want: Any) -> Any:
        """Every input of the snapshot whose place ``want`` accepts: (x, label, place)."""
        out: list[tuple[np.ndarray, str, Place]] = []
        cap = _Capture(**self.cap, sink=lambda x, name, place: out.append((x, name, place)))
        cap.want = want
        snap = TopicSnapshot(self.snapshot.topic, dict(self.snapshot.ends))
        for record in read_topic(
            snap.topic, settings=self.settings, max_messages=self.max_messages,
            timeout_s=self.timeout_s, snapshot=snap,
        ):  # fmt: skip
            cap.add(record.value, record.headers, partition=record.partition, offset=record.offset)
            yield from (item for item in out if want(item[2]))
            out.clear()


@dataclass(kw_only=True)
class KafkaDataset:
    """A topic too large for memory, after its first pass (see the module's docstring)."""

    name: str
    kind: Literal["image", "sequence"]
    labels: list[str]
    shape: tuple[int, ...]
    capture: dict[str, Any]
    reader: _Reader
    seed: int
    test_fraction: float
    first: _FirstPass
    x_test: np.ndarray
    y_test: np.ndarray
    x_cal: np.ndarray
    y_cal: np.ndarray
    #: ``--mix``: the original training data (in memory, at the target's geometry) and the
    #: weights of a captured and of an original input.
    mix: tuple[np.ndarray, np.ndarray] | None = None
    weights: tuple[float, float] | None = None
    #: Where each test input came from: 0 the topic, 1 the ``--mix`` dataset; None: the topic.
    test_origin: np.ndarray | None = None

    def add_mix(
        self,
        x_train: np.ndarray,
        y_train: np.ndarray,
        x_test: np.ndarray,
        y_test: np.ndarray,
        *,
        weights: tuple[float, float],
    ) -> None:
        """Mix in the original data (``--mix``): its training inputs join every epoch and the
        statistics, its test inputs the test split."""
        self.mix, self.weights = (x_train, y_train), weights
        self.test_origin = np.concatenate([np.zeros(len(self.x_test)), np.ones(len(x_test))])
        self.x_test = np.concatenate([self.x_test, x_test])
        self.y_test = np.concatenate([self.y_test, y_test])
        f = self.first
        assert f.sums is not None and f.squares is not None  # noqa: S101  checked at build
        flat = x_train.reshape(-1, x_train.shape[-1]).astype(np.float64)
        if x_train.dtype == np.uint8:
            flat /= 255.0
        f.sums += flat.sum(axis=0)
        f.squares += np.square(flat).sum(axis=0)
        f.values += len(flat)
        pick = np.random.default_rng(self.seed).permutation(len(x_train))[:CALIBRATION_SAMPLE]
        self.x_cal = np.concatenate([self.x_cal, x_train[pick]])
        self.y_cal = np.concatenate([self.y_cal, y_train[pick]])

    @property
    def x_train(self) -> np.ndarray:
        """A sample of the training inputs (for the reference statistics)."""
        return self.x_cal

    @property
    def input_shape(self) -> tuple[int, ...]:
        return self.shape

    @property
    def num_classes(self) -> int:
        return len(self.labels)

    def preprocessing(self, *, stride: int | None) -> Preprocessing:
        """Per-channel mean and std of the training and validation inputs, from the sums."""
        f = self.first
        assert f.sums is not None and f.squares is not None  # noqa: S101  checked at build
        mean = f.sums / f.values
        std = np.sqrt(np.maximum(f.squares / f.values - np.square(mean), 0.0))
        mean_l, std_l = [float(v) for v in mean], [float(max(v, MIN_STD)) for v in std]
        if self.kind == "image":
            height, width, channels = self.shape
            return ImagePreprocessing(
                height=height, width=width, channels=channels,
                color="L" if channels == 1 else "RGB", mean=mean_l, std=std_l,
            )  # fmt: skip
        if stride is not None and stride < 1:
            msg = f"--stride must be >= 1 (readings between inferences), got {stride}"
            raise DatasetError(msg)
        window, channels = self.shape
        return SequencePreprocessing(
            window=window, stride=int(stride or window), channels=channels, mean=mean_l, std=std_l
        )


def streamed_dataset(
    cap: _Capture,
    first: _FirstPass,
    *,
    settings: KafkaSettings,
    snapshot: TopicSnapshot,
    max_messages: int,
    timeout_s: float,
    seed: int,
    test_fraction: float,
) -> KafkaDataset:
    """The :class:`KafkaDataset` of a first pass that did not fit in memory."""
    cap.check()
    labels = list(cap.target.labels) if cap.target is not None else sorted(first.labels)
    index = {name: i for i, name in enumerate(labels)}
    if not first.test.x or first.sums is None:
        msg = f"topic {cap.topic!r}: too few inputs to split off a test and a training split"
        raise DatasetError(msg)
    x_test = np.stack(first.test.x)
    x_cal = np.stack(first.calibration.x)
    config = {
        "topic": cap.topic, "feedback": cap.feedback, "target": cap.target,
        "window": cap.window, "image_size": cap.image_size, "color": cap.color,
    }  # fmt: skip
    summary = cap.summary()
    summary["streamed"] = {"test_inputs_evaluated": len(x_test), "test_inputs": first.test.seen}
    logger.info(
        'streaming topic="%s" messages=%d inputs=%d shape=%s classes=%d test=%d',
        cap.topic, cap.read, cap.emitted, tuple(x_test.shape[1:]), len(labels), len(x_test),
    )  # fmt: skip
    return KafkaDataset(
        name=cap.topic,
        kind="image" if cap.kind == "image" else "sequence",
        labels=labels,
        shape=tuple(int(d) for d in x_test.shape[1:]),
        capture=summary,
        reader=_Reader(
            cap=config,
            settings=settings,
            snapshot=snapshot,
            max_messages=max_messages,
            timeout_s=timeout_s,
        ),  # fmt: skip
        seed=seed,
        test_fraction=test_fraction,
        first=first,
        x_test=x_test,
        y_test=np.array([index[n] for n in first.test.names], dtype=np.int64),
        x_cal=x_cal,
        y_cal=np.array([index[n] for n in first.calibration.names], dtype=np.int64),
    )


@dataclass(kw_only=True)
class KafkaData:
    """The streaming counterpart of :class:`trainer.data.ModelData` for a topic."""

    ds: KafkaDataset
    preprocessing: Preprocessing
    validation_fraction: float
    n_train: int
    n_val: int
    x_fit: np.ndarray
    y_fit: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    #: Captured inputs per split, and the ``--mix`` inputs per split (empty without it).
    n_field: dict[str, int] = field(default_factory=dict)
    mixed: dict[str, tuple[np.ndarray, np.ndarray]] = field(default_factory=dict)
    cache: str = "none"
    streamed: bool = field(default=True, init=False)

    def train_dataset(self, *, batch_size: int, seed: int) -> Any:
        return self._dataset("train", batch_size=batch_size, shuffle=True, seed=seed)

    def val_dataset(self, *, batch_size: int) -> Any:
        return self._dataset("val", batch_size=batch_size, shuffle=False, seed=0)

    def _dataset(self, split: Split, *, batch_size: int, shuffle: bool, seed: int) -> Any:
        import tensorflow as tf

        ds, prep = self.ds, self.preprocessing
        index = {name: i for i, name in enumerate(ds.labels)}
        seed_, test_fraction, val_fraction = ds.seed, ds.test_fraction, self.validation_fraction

        def want(place: Place) -> bool:
            where = split_of(
                place, seed=seed_, test_fraction=test_fraction, validation_fraction=val_fraction
            )
            return where == split

        weighted = ds.weights is not None
        w_field = np.float32(ds.weights[0] if ds.weights else 1.0)

        def inputs() -> Any:
            for x, name, _place in ds.reader.inputs(want):
                if name in index:
                    yield (
                        (x, np.int32(index[name]), w_field)
                        if weighted
                        else (x, np.int32(index[name]))
                    )

        def normalize(x: Any, y: Any, *w: Any) -> tuple[Any, ...]:
            out = tf.numpy_function(prep.apply, [x], tf.float32, stateful=False)
            out.set_shape((None, *ds.shape))
            return (out, y, *w)

        dtype = tf.uint8 if ds.kind == "image" else tf.float32
        signature = (tf.TensorSpec(ds.shape, dtype), tf.TensorSpec((), tf.int32))
        data = tf.data.Dataset.from_generator(
            inputs,
            output_signature=(*signature, tf.TensorSpec((), tf.float32)) if weighted else signature,
        )
        if weighted and ds.weights is not None:
            # --mix: the original inputs of this split, interleaved at random in proportion.
            x_mix, y_mix = self.mixed[split]
            w_mix = np.full(len(y_mix), ds.weights[1], np.float32)
            part = tf.data.Dataset.from_tensor_slices((x_mix, y_mix.astype(np.int32), w_mix))
            n_field, n_mix = self.n_field[split], len(y_mix)
            data = tf.data.Dataset.sample_from_datasets(
                [data, part],
                weights=[n_field / (n_field + n_mix), n_mix / (n_field + n_mix)],
                seed=seed,
                stop_on_empty_dataset=False,
            )
        if shuffle:
            per_input = int(np.prod(ds.shape)) * (1 if ds.kind == "image" else 4)
            size = int(np.clip(SHUFFLE_BYTES // max(per_input, 1), MIN_SHUFFLE, MAX_SHUFFLE))
            data = data.shuffle(size, seed=seed, reshuffle_each_iteration=True)
        data = data.batch(batch_size).map(normalize, num_parallel_calls=tf.data.AUTOTUNE)
        return finish_pipeline(data)


def kafka_model_data(
    ds: KafkaDataset, prep: Preprocessing, *, validation_fraction: float
) -> KafkaData:
    """Cut the validation split off the first pass's ``u`` values; apply ``prep`` to the
    test and calibration arrays."""
    v = np.frombuffer(ds.first.fit_u, dtype=np.float64)
    n_val = int(np.count_nonzero(v < validation_fraction))
    n_train = len(v) - n_val
    if n_val == 0 or n_train == 0:
        msg = (
            f"topic {ds.name!r}: {len(v)} training inputs are too few to hold out a "
            f"validation split of {validation_fraction}"
        )
        raise DatasetError(msg)
    n_field = {"train": n_train, "val": n_val}
    mixed: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if ds.mix is not None:
        x_mix, y_mix = ds.mix
        i_tr, _, i_val, _ = stratified_split(
            np.arange(len(y_mix)), y_mix, test_fraction=validation_fraction, seed=ds.seed
        )
        mixed = {"train": (x_mix[i_tr], y_mix[i_tr]), "val": (x_mix[i_val], y_mix[i_val])}
        n_train, n_val = n_train + len(i_tr), n_val + len(i_val)
    logger.info(
        'streaming topic="%s" train=%d validation=%d test=%d (evaluated %d)',
        ds.name, n_train, n_val, ds.first.test.seen, len(ds.x_test),
    )  # fmt: skip
    return KafkaData(
        ds=ds,
        preprocessing=prep,
        validation_fraction=validation_fraction,
        n_train=n_train,
        n_val=n_val,
        x_fit=prep.apply(ds.x_cal),
        y_fit=ds.y_cal,
        x_test=prep.apply(ds.x_test),
        y_test=ds.y_test,
        n_field=n_field,
        mixed=mixed,
    )
