"""Training: data -> preprocessing -> model -> fit (under a distribution strategy) -> run folder.

:func:`train`, :func:`export_bundles` and :func:`load_trained` are the API used by the CLI
(:mod:`trainer.cli`) and by the test fixtures.
The run folder receives ``model.keras``, ``history.json``, ``run.json`` (what export needs
to rebuild the inputs), plots, ``report.json``/``report.md`` and ``bundles/<variant>/``.
"""

from __future__ import annotations

import json
import logging
import re
import resource
import sys
import time
import warnings
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from stream.bundle import VARIANTS, load_private_key, now_version
from stream.datasets import Dataset
from stream.preprocessing import (
    ImageColor,
    ImagePreprocessing,
    Preprocessing,
    SequencePreprocessing,
    preprocessing_from_dict,
)
from trainer.augment import Augmentation, augmented
from trainer.baseline import run_baseline
from trainer.data import (
    ModelData,
    ModelInputs,
    TrainingDataset,
    fit_preprocessing,
    load_training_data,
    model_data,
)
from trainer.exceptions import TrainerConfigError
from trainer.folder_data import CacheMode, FolderDataset
from trainer.models import SEQUENCE_ARCHS, Arch, ModelConfig, build_model
from trainer.quantization import ExportVariant
from trainer.retrain import saved_options
from trainer.search import AUTO, DEFAULT_BUDGET_S, candidates, summary, validation_score

logger = logging.getLogger(__name__)

MODEL_FILE = "model.keras"
HISTORY_FILE = "history.json"
RUN_FILE = "run.json"


@dataclass(frozen=True, kw_only=True)
class Hyperparameters:
    """Training settings; zero means the architecture's default (:data:`DEFAULTS`)."""

    epochs: int = 0
    batch_size: int = 0
    learning_rate: float = 0.0
    patience: int = 0
    validation_fraction: float = 0.2
    seed: int = 0

    def resolved(self, arch: str) -> Hyperparameters:
        d = DEFAULTS[arch]
        return replace(
            self,
            epochs=self.epochs or int(d["epochs"]),
            batch_size=self.batch_size or int(d["batch_size"]),
            learning_rate=self.learning_rate or float(d["learning_rate"]),
            patience=self.patience or int(d["patience"]),
        )


STEPS_PER_EXECUTION = 16

#: Per-architecture defaults, sized so each trains + exports in 1-2 min on 2 CPU cores.
DEFAULTS: dict[str, dict[str, float]] = {
    "cnn": {"epochs": 40, "batch_size": 32, "learning_rate": 2e-3, "patience": 8},
    "conv1d": {"epochs": 80, "batch_size": 8, "learning_rate": 3e-3, "patience": 15},
    "lstm": {"epochs": 80, "batch_size": 8, "learning_rate": 5e-3, "patience": 20},
    "gru": {"epochs": 80, "batch_size": 8, "learning_rate": 5e-3, "patience": 20},
    # Fitted in one pass (trainer.minirocket): no epochs, learning rate or patience.
    "minirocket": {"epochs": 1, "batch_size": 8, "learning_rate": 0.0, "patience": 1},
}


@dataclass
class TrainResult:
    """A trained model and everything needed to export it."""

    model: Any  # keras.Model
    dataset: TrainingDataset
    preprocessing: Preprocessing
    data: ModelInputs
    config: ModelConfig
    hyperparameters: Hyperparameters
    history: dict[str, list[float]]
    device: str
    out_dir: Path
    seconds: float
    report: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def model_path(self) -> Path:
        return self.out_dir / MODEL_FILE

    @property
    def skipped_files(self) -> list[dict[str, str]]:
        """Files of an image folder left out (path and reason); empty for arrays."""
        return skipped_files(self.dataset)


def skipped_files(ds: TrainingDataset | Dataset) -> list[dict[str, str]]:
    return ds.skipped.to_list() if isinstance(ds, FolderDataset) else []


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far (``ru_maxrss``)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


def default_name(dataset_name: str, arch: str) -> str:
    """``<dataset>-<arch>``, lower case, safe as a registry folder name."""
    return re.sub(r"[^a-z0-9._+-]+", "-", f"{dataset_name}-{arch}".lower()).strip("-")


def task_of(kind: str) -> str:
    return "image-classification" if kind == "image" else "sequence-classification"


def train(
    dataset: str | TrainingDataset,
    config: ModelConfig,
    *,
    hyperparameters: Hyperparameters | None = None,
    out_dir: Path,
    stride: int | None = None,
    verbose: int | str = 2,
    allow_gpu: bool = True,
    device: Any = None,
    deterministic: bool = True,
    dataset_spec: str | None = None,
    name: str | None = None,
    kafka_options: dict[str, Any] | None = None,
    image_size: tuple[int, int] | None = None,
    color: ImageColor | None = None,
    cache: CacheMode = "auto",
    augmentation: Augmentation | None = None,
    search_budget_s: float = DEFAULT_BUDGET_S,
    baseline: str = "none",
) -> TrainResult:
    """Train ``config`` on ``dataset`` (a spec such as ``digits`` or a loaded Dataset).

    Writes ``model.keras``, ``history.json``, ``run.json`` and the training-curve plot into
    ``out_dir``. With ``deterministic`` the run is reproducible from ``hyperparameters.seed``.
    ``image_size``, ``color`` (when ``dataset`` is an ``images:DIR`` spec) and ``cache``
    apply to image folders. ``augmentation`` transforms training batches only
    (:mod:`trainer.augment`); the saved model has no augmentation layer. ``config.arch``
    ``"auto"`` trains every candidate within ``search_budget_s`` and keeps the best on the
    validation split (:mod:`trainer.search`); ``baseline`` (``"minirocket"``) scores a
    classical classifier on the same split (:mod:`trainer.baseline`).
    """

    from trainer import plots
    from trainer.device import make_deterministic, select_device

    requested = hyperparameters or Hyperparameters()
    for arch in SEQUENCE_ARCHS if config.arch == AUTO else (config.arch,):
        resolved = requested.resolved(arch)
        if resolved.epochs < 1 or resolved.batch_size < 1:
            msg = (
                f"--epochs and --batch-size must be >= 1, got {resolved.epochs} and "
                f"{resolved.batch_size}"
            )
            raise TrainerConfigError(msg)
    if deterministic:
        make_deterministic(requested.seed)
    spec = dataset_spec or (dataset if isinstance(dataset, str) else dataset.name)
    ds = (
        load_training_data(
            dataset, seed=requested.seed, image_size=image_size, color=color,
            **(kafka_options or {}),
        )
        if isinstance(dataset, str)
        else dataset
    )  # fmt: skip
    archs = candidates(config.arch, ds.kind)
    aug = (augmentation or Augmentation()).check(ds.kind)
    prep = fit_preprocessing(ds, stride=stride, seed=requested.seed)
    data = model_data(
        ds, prep, validation_fraction=requested.validation_fraction, seed=requested.seed,
        cache=cache,
    )  # fmt: skip
    if device is None:
        device = select_device(allow_gpu=allow_gpu)
    logger.info(device.describe())
    logger.info(
        'dataset="%s" kind=%s train=%d validation=%d test=%d classes=%d input=%s',
        ds.name, ds.kind, data.n_train, data.n_val, len(data.x_test),
        ds.num_classes, ds.input_shape,
    )  # fmt: skip
    search: list[dict[str, Any]] = []
    best: tuple[Any, ...] | None = None
    search_started = time.perf_counter()
    for arch in archs:
        if search and time.perf_counter() - search_started > search_budget_s:
            logger.info('search budget spent, not trying arch="%s"', arch)
            search.append({"arch": arch, "skipped": f"--search-budget {search_budget_s:g} s spent"})
            continue
        if arch == "minirocket" and device.multi_worker:
            if len(archs) == 1:
                msg = "--arch minirocket is fitted on one machine: drop --cluster/TF_CONFIG"
                raise TrainerConfigError(msg)
            search.append({"arch": arch, "skipped": "fitted on one machine, not under --cluster"})
            continue
        if deterministic and len(archs) > 1:
            make_deterministic(requested.seed)  # each candidate as `--arch <it>` trains it
        hp = requested.resolved(arch)
        candidate = replace(config, arch=arch).resolved(ds.input_shape)
        model, history, seconds = _fit(
            candidate, hp, ds=ds, prep=prep, data=data, device=device, aug=aug, verbose=verbose
        )
        search.append(summary(arch, history, seconds))
        if best is None or validation_score(history) > validation_score(best[1]):
            best = (model, history, seconds, candidate, hp)
    if best is None:
        msg = f"no candidate of --arch {config.arch} could train: {search}"
        raise TrainerConfigError(msg)
    model, history, seconds, config, hp = best
    if len(archs) > 1:
        seconds = time.perf_counter() - search_started
        logger.info('search chose arch="%s" candidates=%s', config.arch, search)
    baseline_result = run_baseline(baseline, ds, seed=hp.seed) if isinstance(ds, Dataset) else None
    if device.multi_worker:
        # A plain copy of the trained weights: saving, predicting and exporting it needs no
        # other worker (a model of the strategy would shard its inputs over the workers).
        local = build_model(config, ds.input_shape, ds.num_classes)
        local.set_weights(model.get_weights())
        model = local
    run_info = {
        "name": name or default_name(ds.name, config.arch),
        "dataset": spec,
        "dataset_name": ds.name,
        "kind": ds.kind,
        "labels": ds.labels,
        "model_config": config.to_dict(),
        "hyperparameters": asdict(hp),
        "preprocessing": prep.to_dict(),
        "device": device.describe(),
        "epochs_run": len(history.get("loss", [])),
        "best_epoch": int(np.argmin(history["val_loss"])) + 1 if history.get("val_loss") else 0,
        "train_seconds": round(seconds, 2),
        "data": {
            "streamed": data.streamed,
            "cache": getattr(data, "cache", "arrays"),
            "train": data.n_train,
            "validation": data.n_val,
            "test": len(data.x_test),
        },
        "augmentation": aug.to_dict() if aug.active else None,
        "search": search if len(archs) > 1 else None,
        "baseline": baseline_result,
        "skipped_files": skipped_files(ds),
        "capture": getattr(ds, "capture", None),
        "peak_rss_bytes": peak_rss_bytes(),
    }
    if device.is_chief:  # the other workers of a cluster write nothing
        out_dir.mkdir(parents=True, exist_ok=True)
        model.save(out_dir / MODEL_FILE)
        (out_dir / HISTORY_FILE).write_text(json.dumps(history, indent=1) + "\n")
        plots.training_curves(history, out_dir / "plots" / "training_curves.png")
        (out_dir / RUN_FILE).write_text(json.dumps(run_info, indent=2) + "\n")
    logger.info('trained epochs=%d seconds=%.1f out="%s"', run_info["epochs_run"], seconds, out_dir)
    return TrainResult(
        model=model,
        dataset=ds,
        preprocessing=prep,
        data=data,
        config=config,
        hyperparameters=hp,
        history=history,
        device=device.describe(),
        out_dir=out_dir,
        seconds=seconds,
        extra=run_info,
    )


def _fit(
    config: ModelConfig,
    hp: Hyperparameters,
    *,
    ds: TrainingDataset,
    prep: Preprocessing,
    data: ModelInputs,
    device: Any,
    aug: Augmentation,
    verbose: int | str,
) -> tuple[Any, dict[str, list[float]], float]:
    """Build, compile and fit one model under the device's strategy: (model, history, seconds)."""
    import keras

    if config.arch == "minirocket":
        if not isinstance(data, ModelData):
            msg = "--arch minirocket classifies sequences held in memory"
            raise TrainerConfigError(msg)
        from trainer import minirocket

        if aug.active:
            logger.warning("--augment does not apply to --arch minirocket (no gradient training)")
        fitted = minirocket.fit(
            data.x_train, data.y_train, data.x_val, data.y_val,
            num_classes=ds.num_classes, n_features=config.features, seed=hp.seed,
        )  # fmt: skip
        return fitted.model, fitted.history, fitted.seconds
    with device.strategy.scope():
        model = build_model(config, ds.input_shape, ds.num_classes)
        # Augmentation layers wrap the model for fit only: `model` is saved and exported.
        fit_model = (
            augmented(model, aug.layers(kind=ds.kind, prep=prep, seed=hp.seed))
            if aug.active
            else model
        )
        fit_model.compile(
            optimizer=keras.optimizers.Adam(hp.learning_rate, clipnorm=1.0),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
            # Several steps per call: the per-step overhead of a distribution strategy
            # otherwise dominates small models on a CPU (one under several workers: see
            # trainer/keras_fixes.py).
            steps_per_execution=1 if device.multi_worker else STEPS_PER_EXECUTION,
        )
    train_ds = data.train_dataset(batch_size=hp.batch_size, seed=hp.seed)
    val_ds = data.val_dataset(batch_size=hp.batch_size)
    stop = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=hp.patience, restore_best_weights=True
    )
    started = time.perf_counter()
    with warnings.catch_warnings():
        # Streamed data has no known length (unreadable files are dropped on the way):
        # Keras then says "Your input ran out of data" at the end of every epoch.
        warnings.filterwarnings("ignore", message="Your input ran out of data")
        fit = fit_model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=hp.epochs,
            callbacks=[stop],
            verbose=verbose,
            shuffle=False,  # the datasets already reshuffle every epoch with the seed
        )
    seconds = time.perf_counter() - started
    history = {k: [float(v) for v in vals] for k, vals in fit.history.items()}
    return model, history, seconds


def export_bundles(
    result: TrainResult,
    *,
    name: str,
    version: str | None = None,
    variants: Sequence[ExportVariant] = VARIANTS,
    max_accuracy_drop: float = 0.01,
    private_key_path: Path | None = None,
    private_key: Ed25519PrivateKey | None = None,
    out_dir: Path | None = None,
    latency_budget_s: float | None = None,
    candidates: Sequence[Any] = (),
    sections: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Export, evaluate and bundle every variant of a trained model (see ``export_all``).

    Writes into ``out_dir`` (default: the run folder). ``candidates`` (pruned, distilled
    models: ``trainer.export.Candidate``) and report ``sections`` go to ``export_all``.
    """
    from trainer.evaluate import LATENCY_BUDGET_S
    from trainer.export import BundleInfo, export_all
    from trainer.reference import build_reference

    key = load_private_key(private_key_path) if private_key_path else private_key
    info = BundleInfo(
        name=name,
        version=version or now_version(),
        task=task_of(result.dataset.kind),
        labels=result.dataset.labels,
        preprocessing=result.preprocessing,
        reference=build_reference(result.dataset.x_train, result.dataset.kind),
    )
    report = export_all(
        result.model,
        info=info,
        x_calibration=result.data.x_fit,
        y_calibration=result.data.y_fit,
        x_test=result.data.x_test,
        y_test=result.data.y_test,
        out_dir=out_dir or result.out_dir,
        variants=variants,
        max_accuracy_drop=max_accuracy_drop,
        private_key=key,
        latency_budget_s=latency_budget_s or LATENCY_BUDGET_S,
        candidates=candidates,
        sections=sections,
        meta={
            "dataset": result.extra.get("dataset", result.dataset.name),
            "arch": result.config.arch,
            "device": result.device,
            "signed": key is not None,
            "train_seconds": round(result.seconds, 2),
            "epochs_run": len(result.history.get("loss", [])),
            "augmentation": result.extra.get("augmentation"),
            "search": result.extra.get("search"),
            "baseline": result.extra.get("baseline"),
            "skipped_files": result.skipped_files,
            "capture": result.extra.get("capture"),
            "peak_rss_bytes": peak_rss_bytes(),
        },
    )
    if out_dir is None:
        result.report = report
    return report


def load_trained(
    model_path: Path,
    *,
    dataset: str | None = None,
    stride: int | None = None,
    kafka_options: dict[str, Any] | None = None,
) -> TrainResult:
    """Reload a saved ``.keras`` model with the data and preprocessing it was trained with.

    ``run.json`` next to the model (written by ``train``) supplies the dataset spec, the
    seed and the preprocessing; ``dataset`` overrides the spec (then the preprocessing is
    learned again unless run.json has it and the shapes match).
    """
    import keras

    if not model_path.is_file():
        msg = f"--model {model_path} does not exist; pass the model.keras that `train` wrote"
        raise TrainerConfigError(msg)
    run_path = model_path.parent / RUN_FILE
    run: dict[str, Any] = json.loads(run_path.read_text()) if run_path.is_file() else {}
    spec = dataset or run.get("dataset")
    if not spec:
        msg = f"no {RUN_FILE} next to {model_path}: pass --dataset to export it"
        raise TrainerConfigError(msg)
    hp = (
        Hyperparameters(**run["hyperparameters"]) if "hyperparameters" in run else Hyperparameters()
    )
    saved = (
        preprocessing_from_dict(run["preprocessing"])
        if "preprocessing" in run and spec == run.get("dataset")
        else None
    )
    # An image folder is fitted to the size and colour it was trained at.
    geometry: dict[str, Any] = (
        {"image_size": (saved.height, saved.width), "color": saved.color}
        if isinstance(saved, ImagePreprocessing)
        else {}
    )
    options = dict(kafka_options or {})
    if spec == run.get("dataset"):  # a retrained run: the same labels, mix and geometry
        for key, value in saved_options(run.get("capture")).items():
            if options.get(key) is None:
                options[key] = value
    ds = load_training_data(spec, seed=hp.seed, **geometry, **options)
    if saved is None or not isinstance(ds, FolderDataset):  # a folder: no second stats pass
        prep = fit_preprocessing(ds, stride=stride, seed=hp.seed)
    if saved is not None:
        prep = (
            replace(saved, stride=stride)
            if stride and isinstance(saved, SequencePreprocessing)
            else saved
        )
    import trainer.layers  # noqa: F401  registers the trainer's layers (ProportionPositive)

    model = keras.models.load_model(model_path)
    expected = tuple(int(d) for d in model.input_shape[1:])
    if expected != ds.input_shape:
        msg = (
            f"--model {model_path} expects inputs shaped {expected} but dataset {spec!r} "
            f"has samples shaped {ds.input_shape}"
        )
        raise TrainerConfigError(msg)
    config = ModelConfig.from_dict(run["model_config"]) if "model_config" in run else _guess(model)
    data = model_data(ds, prep, validation_fraction=hp.validation_fraction, seed=hp.seed)
    return TrainResult(
        model=model,
        dataset=ds,
        preprocessing=prep,
        data=data,
        config=config,
        hyperparameters=hp,
        history=json.loads((model_path.parent / HISTORY_FILE).read_text())
        if (model_path.parent / HISTORY_FILE).is_file()
        else {},
        device=str(run.get("device", "?")),
        out_dir=model_path.parent,
        seconds=float(run.get("train_seconds", 0.0)),
        extra={**run, "dataset": spec},
    )


def _guess(model: Any) -> ModelConfig:
    names = {layer.name for layer in model.layers}
    arch: Arch = "cnn" if len(model.input_shape) == 4 else "conv1d"
    if "mr_features" in names:
        arch = "minirocket"
    elif "lstm" in names:
        arch = "lstm"
    elif "gru" in names:
        arch = "gru"
    return ModelConfig(arch=arch)
