"""``edgeinfer train`` and ``edgeinfer export``: argument declarations only.

Nothing here imports TensorFlow: the handlers in :mod:`trainer.train` are imported only
when one of these subcommands runs.
"""

from __future__ import annotations

import argparse
from typing import Any

from stream.settings import add_kafka_arguments
from trainer.quantization import EXPORT_VARIANTS

ARCH_CHOICES = ("cnn", "lstm", "gru", "conv1d", "minirocket", "auto")
_DATASETS = "digits | basic-motions | aeon:NAME | npz:PATH | images:DIR | kafka:TOPIC"


def _export_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("export")
    g.add_argument("--name", help="model name in the bundles (default <dataset>-<arch>)")
    g.add_argument("--version", help="bundle version (default: UTC time YYYYMMDDHHMMSS)")
    g.add_argument("--key", metavar="PRIVATE_KEY", help="Ed25519 private key (PEM) to sign with")
    g.add_argument(
        "--variants",
        default=",".join(EXPORT_VARIANTS),
        help=f"comma-separated subset of {','.join(EXPORT_VARIANTS)} (default: all; int8-loop "
        "only for lstm/gru)",
    )
    g.add_argument(
        "--max-accuracy-drop",
        type=float,
        default=0.01,
        help="a variant losing more test accuracy than this against the Keras model is "
        "marked not publishable (default 0.01)",
    )
    g.add_argument(
        "--stride",
        type=int,
        help="sequences: readings between two inferences on the device (default: the window)",
    )


def _sparsity(text: str) -> float:
    """``--prune`` value: a share of the kernel weights, strictly between 0 and 1."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 < value < 1.0:
        msg = f"{text!r}: give the share of kernel weights to zero, between 0 and 1 (e.g. 0.5)"
        raise argparse.ArgumentTypeError(msg)
    return value


def _compression_arguments(p: argparse.ArgumentParser, *, distill: bool = False) -> None:
    g = p.add_argument_group("compression beyond post-training quantization (docs/trainer.md)")
    if distill:
        g.add_argument(
            "--distill",
            action="store_true",
            help="also train a teacher (twice the filters and units) and a student of this "
            "size on its soft targets; export it as distilled-<variant> variants",
        )
    g.add_argument(
        "--prune",
        type=_sparsity,
        metavar="SPARSITY",
        help="also export pruned-<variant> variants: fine-tune a copy of the model while "
        "zeroing this share of its kernel weights (magnitude pruning, polynomial schedule)",
    )
    g.add_argument(
        "--prune-epochs",
        type=int,
        default=0,
        metavar="N",
        help="fine-tuning epochs of --prune (default: a quarter of --epochs, at least 10)",
    )


def _image_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group(
        "images:DIR and kafka:TOPIC datasets (mixed sizes, streamed from disk or the topic)"
    )
    g.add_argument(
        "--image-size",
        metavar="HxW",
        help="model input size, every image resized to it as the agent does (default: "
        "images:DIR the median size, longer side capped at 96; kafka: the first image's)",
    )
    g.add_argument(
        "--color",
        choices=("L", "RGB"),
        help="model input colour: L (grey) or RGB (default: images:DIR L when every image is "
        "grey; kafka: the first image's)",
    )
    g.add_argument(
        "--cache",
        choices=("auto", "memory", "none"),
        default="auto",
        help="keep the resized training inputs in memory (auto: when they fit in 256 MiB; "
        "none: decode the files, or read the topic again, every epoch)",
    )


def _augment_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("augmentation (training batches only; never in the exported model)")
    g.add_argument(
        "--augment",
        nargs="?",
        const="medium",
        default="none",
        choices=("none", "light", "medium", "strong"),
        help="preset for the data's kind (--augment alone: medium; strong flips images); "
        "the knobs below override a preset's values",
    )
    g.add_argument(
        "--augment-flip", choices=("none", "horizontal", "vertical", "horizontal_and_vertical")
    )
    for knob, what in (
        ("rotation", "images: rotation, fraction of a full turn either way"),
        ("zoom", "images: zoom in/out, fraction of the size"),
        ("translate", "images: shift, fraction of height and width"),
        ("shear", "images: shear factor"),
        ("contrast", "images: contrast factor range 1 +- this"),
        ("jitter", "sequences: Gaussian noise std, in channel stds"),
        ("scale", "sequences: gain per window and channel, 1 +- this"),
    ):
        g.add_argument(f"--augment-{knob}", type=float, metavar="F", help=what)


def _capture_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("kafka:TOPIC datasets (a topic written by `edgeinfer replay`)")
    g.add_argument(
        "--window",
        type=int,
        help="sensor readings per training window (default: all readings of a device, "
        "up to --max-window)",
    )
    g.add_argument("--max-window", type=int, default=512, help="cap on a window (default 512)")
    g.add_argument(
        "--max-messages", type=int, default=200_000, help="stop capturing after this many"
    )
    g.add_argument(
        "--capture-timeout",
        type=float,
        default=30.0,
        help="seconds to wait for the topic to be read to its end (default 30)",
    )
    r = p.add_argument_group(
        "retraining from the field (kafka:samples; docs/trainer.md, Retraining from the field)"
    )
    r.add_argument(
        "--labels-from",
        metavar="TOPIC",
        help="label inputs from this feedback topic (by their topic/partition/offset; "
        "else their label header; else skipped and counted)",
    )
    r.add_argument(
        "--mix",
        metavar="DATASET",
        help="add this dataset's training data (e.g. digits, basic-motions) so the model "
        "keeps the original distribution; also gives the geometry and labels without --like",
    )
    r.add_argument(
        "--mix-share",
        type=float,
        metavar="S",
        help="share of the training loss the --mix data carries, 0 <= S < 1 (default 0.8)",
    )
    r.add_argument(
        "--like",
        metavar="BUNDLE_DIR",
        help="the serving model's bundle: take its input geometry, labels (in order) and "
        "name; the version must sort after its version",
    )
    add_kafka_arguments(p)


def register(subparsers: Any) -> None:
    """Declare ``train`` and ``export``."""
    p = subparsers.add_parser(
        "train",
        help="train a model, export its LiteRT variants, evaluate them, write bundles",
        description="Train a Keras model, export float32/float16/dynamic/int8 (and int8-loop "
        "for LSTM/GRU) LiteRT variants, evaluate each in LiteRT against the Keras model, write "
        "report and bundles.",
    )
    p.add_argument("--dataset", required=True, help=_DATASETS)
    p.add_argument(
        "--arch",
        required=True,
        choices=ARCH_CHOICES,
        help="minirocket: fixed convolutions + ridge head, fitted (sequences); auto: train every "
        "architecture that fits the data (minirocket, conv1d, gru, lstm for sequences) within "
        "--search-budget and keep the best on the validation split",
    )
    p.add_argument(
        "--search-budget",
        type=float,
        default=1200.0,
        metavar="SECONDS",
        help="--arch auto: no further candidate starts after this (default 1200)",
    )
    p.add_argument(
        "--baseline",
        choices=("none", "minirocket"),
        default="none",
        help="sequences: also score aeon's MiniRocket classifier on the same split and put "
        "it in the report (numba compiles it on first use: 1-3 min)",
    )
    p.add_argument("--epochs", type=int, help="maximum epochs (early stopping may end sooner)")
    p.add_argument("--batch-size", type=int, help="global batch size (split over GPUs)")
    p.add_argument("--learning-rate", type=float)
    p.add_argument("--patience", type=int, help="early-stopping patience in epochs")
    p.add_argument(
        "--validation-split", type=float, default=0.2, help="share of training data (0.2)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed; same seed, same test metrics on CPU")
    p.add_argument("--out", help="output folder (default runs/<name>)")
    p.add_argument("--no-export", action="store_true", help="train and save only")
    p.add_argument("--cpu", action="store_true", help="ignore GPUs")
    p.add_argument(
        "--cluster",
        metavar="HOST:PORT,...",
        help="train on several machines: every worker's address, the same list on each "
        "(default: TF_CONFIG when set, else this machine only)",
    )
    p.add_argument(
        "--worker-index",
        type=int,
        help="with --cluster: this worker's position in the list (0 = the chief, which "
        "writes the model, report and bundles)",
    )
    p.add_argument("--quiet", action="store_true", help="no per-epoch Keras output")
    m = p.add_argument_group("model size (defaults fit small devices)")
    m.add_argument("--filters", help="conv filters per block, e.g. 16,32,64")
    m.add_argument("--units", type=int, help="LSTM/GRU units or dense units")
    m.add_argument(
        "--conv-stride",
        type=int,
        help="stride of the Conv1D front end of lstm/gru (default: down to <= 32 steps; 1 = none)",
    )
    m.add_argument("--dropout", type=float, default=0.2)
    m.add_argument(
        "--features",
        type=int,
        help="minirocket: number of features (default 10000, rounded down to a multiple of 84)",
    )
    _image_arguments(p)
    _augment_arguments(p)
    _export_arguments(p)
    _compression_arguments(p, distill=True)
    _capture_arguments(p)
    p.set_defaults(handler="trainer.cli:run_train")

    e = subparsers.add_parser(
        "export",
        help="export a saved .keras model to its LiteRT variants, evaluate, bundle",
        description="Export DIR/model.keras (written by `train`) to LiteRT variants, "
        "evaluate each in LiteRT, write report.json/report.md and bundles/<variant>/.",
    )
    e.add_argument("--model", required=True, help="DIR/model.keras from `edgeinfer train`")
    e.add_argument(
        "--dataset", help=f"{_DATASETS} (default: the one in run.json next to the model)"
    )
    e.add_argument("--out", help="output folder (default: the model's folder)")
    _export_arguments(e)
    _compression_arguments(e)
    _capture_arguments(e)
    e.set_defaults(handler="trainer.cli:run_export")
