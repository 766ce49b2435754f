"""Handlers of ``edgeinfer train`` and ``edgeinfer export`` (declared in :mod:`trainer.commands`).

TensorFlow is imported only after the cheap checks (arguments, key file, dataset), so bad
input fails in about a second.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import Any

from stream.image_folder import parse_image_size
from stream.preprocessing import SequencePreprocessing
from trainer.augment import IMAGE_KNOBS, SEQUENCE_KNOBS, Augmentation
from trainer.cluster import parse_cluster
from trainer.data import load_training_data
from trainer.exceptions import TrainerConfigError
from trainer.models import ModelConfig
from trainer.quantization import EXPORT_VARIANTS, ExportVariant
from trainer.retrain import Like, accuracy_by_origin, candidate_version, read_like
from trainer.search import candidates as arch_candidates
from trainer.train import (
    Hyperparameters,
    TrainResult,
    default_name,
    export_bundles,
    load_trained,
    train,
)


def parse_variants(text: str) -> list[ExportVariant]:
    chosen = [v.strip() for v in text.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in EXPORT_VARIANTS]
    if unknown or not chosen:
        msg = f"--variants {text!r}: choose from {','.join(EXPORT_VARIANTS)}"
        raise TrainerConfigError(msg)
    return [v for v in EXPORT_VARIANTS if v in chosen]


_RETRAIN_FLAGS = (("labels_from", "--labels-from"), ("mix", "--mix"), ("like", "--like"))


def _kafka_options(args: argparse.Namespace) -> dict[str, Any]:
    if not str(getattr(args, "dataset", "") or "").startswith("kafka:"):
        given = [flag for attr, flag in _RETRAIN_FLAGS if getattr(args, attr, None)]
        if given:
            msg = f"{', '.join(given)} apply to kafka:TOPIC datasets only (the captured samples)"
            raise TrainerConfigError(msg)
        return {}
    from stream.settings import settings_from_args

    return {
        "settings": settings_from_args(args),
        "window": args.window,
        "max_window": args.max_window,
        "max_messages": args.max_messages,
        "timeout_s": args.capture_timeout,
        "labels_from": args.labels_from,
        "mix": args.mix,
        "mix_share": args.mix_share,
        "like": args.like,
        "cache": getattr(args, "cache", "auto"),
    }


def _retrain_section(result: TrainResult, like: Like | None) -> dict[str, Any] | None:
    """``report.json`` ``retrain``: the serving model and the accuracy per test part."""
    by_origin = accuracy_by_origin(
        result.model, result.data.x_test, result.data.y_test, result.dataset
    )
    if like is None and by_origin is None:
        return None
    return {
        "like": like.summary() if like else None,
        "test_accuracy": by_origin,
    }


def _print_report(report: dict[str, Any], out_dir: Path) -> None:
    keras_acc = report["keras"]["accuracy"]
    print(f"keras accuracy {keras_acc:.4f} on {report['test_samples']} test samples")
    print(
        f"{'variant':<18} {'accuracy':>8} {'macro_f1':>8} {'size_B':>9} {'gzip_B':>9} "
        f"{'p50_ms':>8} {'p99_ms':>8}  publishable"
    )
    for name, v in report["variants"].items():
        if v.get("error"):
            print(f"{name:<18} failed: {v['error']}")
            continue
        print(
            f"{name:<18} {v['accuracy']:>8.4f} {v['macro_f1']:>8.4f} {v['size_bytes']:>9,} "
            f"{v.get('gzip_size_bytes') or 0:>9,} "
            f"{v['latency_ms']['p50']:>8.4f} {v['latency_ms']['p99']:>8.4f}  "
            f"{'yes' if v['publishable'] else 'NO'}"
        )
    for note in report["notes"]:
        print(f"note: {note}")
    if report.get("capture"):
        _print_capture(report["capture"], report.get("retrain"))
    if report.get("skipped_files"):
        first = report["skipped_files"][0]
        print(
            f"skipped {len(report['skipped_files'])} unusable files (report.json "
            f"skipped_files), first: {first['path']}: {first['reason']}"
        )
    print(f"report: {out_dir / 'report.md'}  bundles: {out_dir / 'bundles'}")


def _print_capture(capture: dict[str, Any], retrain: dict[str, Any] | None) -> None:
    """What the ``kafka:`` capture used and skipped, and the accuracy per test part."""
    by = capture["labelled_by"]
    skipped = {k: v for k, v in capture["skipped"].items() if v}
    print(
        f"captured {capture['inputs']} inputs from {capture['messages']} messages on "
        f"{capture['topic']!r} (labels: {by['feedback']} from feedback, {by['header']} from "
        f"the label header); skipped {skipped or 'none'}"
    )
    if capture.get("mix"):
        m = capture["mix"]
        print(
            f"mixed with {m['dataset']}: {m['train']['mix']} original and {m['train']['field']} "
            f"captured training inputs, the original carrying {m['share']:.0%} of the loss"
        )
    for part, entry in ((retrain or {}).get("test_accuracy") or {}).items():
        if entry["samples"]:
            print(
                f"keras accuracy {entry['accuracy']:.4f} on the {entry['samples']} {part} test "
                "samples"
            )


def _config_from_args(args: argparse.Namespace) -> ModelConfig:
    filters = tuple(int(f) for f in args.filters.split(",")) if args.filters else ()
    return ModelConfig(
        arch=args.arch,
        filters=filters,
        units=args.units or 0,
        conv_stride=args.conv_stride or 0,
        dropout=args.dropout,
        features=getattr(args, "features", None) or 0,
    )


def _print_training_choices(run: dict[str, Any]) -> None:
    """What ``--arch auto`` tried and chose, and the ``--baseline`` score."""
    for entry in run.get("search") or []:
        if entry.get("skipped"):
            print(f"search: {entry['arch']} not tried ({entry['skipped']})")
        else:
            print(
                f"search: {entry['arch']} validation accuracy {entry['val_accuracy']:.4f} "
                f"(loss {entry['val_loss']:.4f}, {entry['seconds']:.0f} s)"
            )
    if run.get("search"):
        print(f"search chose {run['model_config']['arch']}")
    if run.get("baseline"):
        b = run["baseline"]
        print(f"baseline {b['name']}: test accuracy {b['accuracy']:.4f} ({b['seconds']:.0f} s)")


def _augmentation(args: argparse.Namespace, kind: str) -> Augmentation:
    """``--augment`` preset for the data's kind, with the ``--augment-*`` knobs applied."""
    knobs = {k: getattr(args, f"augment_{k}", None) for k in (*IMAGE_KNOBS, *SEQUENCE_KNOBS)}
    preset = getattr(args, "augment", "none") or "none"
    return Augmentation.preset(preset, kind).with_knobs(**knobs).check(kind)


def _compression(args: argparse.Namespace, result: TrainResult) -> tuple[list[Any], dict[str, Any]]:
    """The pruned (``--prune``) and distilled (``--distill``) export candidates and their
    report sections."""
    candidates: list[Any] = []
    sections: dict[str, Any] = {}
    if result.config.arch == "minirocket" and (
        getattr(args, "distill", False) or getattr(args, "prune", None)
    ):
        print("--prune/--distill skipped: minirocket's convolutions are fixed, its head is fitted")
        return candidates, sections
    if getattr(args, "distill", False):
        from trainer.distill import distilled_candidate

        candidate, sections["distillation"] = distilled_candidate(
            result, verbose=0 if getattr(args, "quiet", False) else 2
        )
        candidates.append(candidate)
    if getattr(args, "prune", None):
        from trainer.pruning import pruned_candidate

        candidate, sections["pruning"] = pruned_candidate(
            result, sparsity=args.prune, epochs=args.prune_epochs
        )
        candidates.append(candidate)
    return candidates, sections


def _quiet_tensorflow() -> None:
    """Hide TensorFlow's C++ info/warning lines (errors still show) unless the user set it."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def run_train(args: argparse.Namespace) -> int:
    """``edgeinfer train``."""
    _quiet_tensorflow()
    variants = parse_variants(args.variants)
    if args.key and not Path(args.key).is_file():
        msg = f"--key {args.key} does not exist; make a pair with `edgeinfer keys generate`"
        raise TrainerConfigError(msg)
    config = _config_from_args(args)
    cluster = parse_cluster(args.cluster, args.worker_index)
    hp = Hyperparameters(
        epochs=args.epochs or 0,
        batch_size=args.batch_size or 0,
        learning_rate=args.learning_rate or 0.0,
        patience=args.patience or 0,
        validation_fraction=args.validation_split,
        seed=args.seed,
    )
    image_size = parse_image_size(args.image_size) if args.image_size else None
    like = read_like(args.like) if getattr(args, "like", None) else None
    version = candidate_version(args.version, like)
    stride = args.stride
    if like is not None and stride is None:
        prep = like.manifest.preprocessing
        stride = prep.stride if isinstance(prep, SequencePreprocessing) else None
    ds = load_training_data(
        args.dataset,
        seed=args.seed,
        image_size=image_size,
        color=args.color,
        **_kafka_options(args),
    )
    arch_candidates(config.arch, ds.kind)  # refuses an arch that does not fit the data
    augmentation = _augmentation(args, ds.kind)
    from trainer.device import select_device  # imports TensorFlow: after the cheap checks

    device = select_device(allow_gpu=not args.cpu, cluster=cluster)
    print(device.describe(), flush=True)
    name = args.name or (like.manifest.name if like else default_name(ds.name, config.arch))
    out_dir = Path(args.out) if args.out else Path("runs") / name
    result = train(
        ds,
        config,
        hyperparameters=hp,
        out_dir=out_dir,
        stride=stride,
        verbose=0 if args.quiet else 2,
        device=device,
        dataset_spec=args.dataset,
        name=name,
        cache=args.cache,
        augmentation=augmentation,
        search_budget_s=args.search_budget,
        baseline=args.baseline,
    )
    if not device.is_chief:
        print(f"worker {device.worker_index} trained; the chief writes the model and bundles")
        device.barrier()  # leave with the chief (see TrainingDevice.barrier)
        return 0
    print(
        f"trained in {result.seconds:.1f} s ({result.extra['epochs_run']} epochs); "
        f"model: {result.model_path}"
    )
    _print_training_choices(result.extra)
    if args.no_export:
        device.barrier()
        return 0
    candidates, sections = _compression(args, result)
    retrain = _retrain_section(result, like)
    if retrain is not None:
        sections["retrain"] = retrain
    report = export_bundles(
        result,
        name=name,
        version=version,
        variants=variants,
        max_accuracy_drop=args.max_accuracy_drop,
        private_key_path=Path(args.key) if args.key else None,
        candidates=candidates,
        sections=sections,
    )
    _print_report(report, out_dir)
    device.barrier()
    return 0 if report["recommended"] else 1


def run_export(args: argparse.Namespace) -> int:
    """``edgeinfer export``."""
    _quiet_tensorflow()
    variants = parse_variants(args.variants)
    model_path = Path(args.model)
    result = load_trained(
        model_path, dataset=args.dataset, stride=args.stride, kafka_options=_kafka_options(args)
    )
    if args.out:
        result.out_dir = Path(args.out)
    name = (
        args.name
        or result.extra.get("name")
        or default_name(result.dataset.name, result.config.arch)
    )
    candidates, sections = _compression(args, result)
    report = export_bundles(
        result,
        name=name,
        version=args.version,
        variants=variants,
        max_accuracy_drop=args.max_accuracy_drop,
        private_key_path=Path(args.key) if args.key else None,
        candidates=candidates,
        sections=sections,
    )
    _print_report(report, result.out_dir)
    if report["recommended"]:
        print(f"recommended variant: {report['recommended']}")
    return 0 if report["recommended"] else 1
