"""``edgeinfer train``/``export`` declarations: no TensorFlow at registration, options parse."""

from __future__ import annotations

import subprocess
import sys

import pytest

from stream.cli import build_parser
from trainer.cli import parse_variants
from trainer.exceptions import TrainerConfigError


def test_registering_the_commands_does_not_import_tensorflow() -> None:
    code = (
        "import sys; from stream.cli import build_parser; "
        "a = build_parser().parse_args(['train', '--dataset', 'digits', '--arch', 'cnn']); "
        "import trainer.commands; "
        "print(a.handler, 'tensorflow' in sys.modules, 'keras' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout.split()
    assert out == ["trainer.cli:run_train", "False", "False"]


def test_train_options_parse() -> None:
    args = build_parser().parse_args(
        [
            "train", "--dataset", "npz:/d.npz", "--arch", "gru", "--epochs", "3",
            "--batch-size", "4", "--seed", "7", "--out", "o", "--name", "n", "--version", "v",
            "--key", "k", "--no-export", "--max-accuracy-drop", "0.02", "--variants", "int8",
            "--stride", "10",
        ]
    )  # fmt: skip
    assert (args.epochs, args.batch_size, args.seed, args.stride) == (3, 4, 7, 10)
    assert args.no_export and args.max_accuracy_drop == 0.02 and args.variants == "int8"
    assert args.handler == "trainer.cli:run_train"


def test_export_options_parse() -> None:
    args = build_parser().parse_args(["export", "--model", "runs/x/model.keras"])
    assert args.handler == "trainer.cli:run_export"
    assert args.variants == "float32,float16,dynamic,int8,int8-loop"
    assert args.dataset is None
    assert args.prune is None and args.prune_epochs == 0


def test_prune_options_parse_on_train_and_export() -> None:
    args = build_parser().parse_args(
        ["train", "--dataset", "digits", "--arch", "cnn", "--prune", "0.5", "--prune-epochs", "3"]
    )
    assert (args.prune, args.prune_epochs) == (0.5, 3)
    args = build_parser().parse_args(["export", "--model", "m.keras", "--prune", "0.75"])
    assert args.prune == 0.75


@pytest.mark.parametrize("bad", ["0", "1", "1.5", "-0.1", "half"])
def test_prune_outside_zero_to_one_is_refused_by_argparse(
    bad: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--dataset", "digits", "--arch", "cnn", "--prune", bad])
    assert "between 0 and 1" in capsys.readouterr().err


def test_unknown_arch_is_refused_by_argparse() -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--dataset", "digits", "--arch", "resnet"])


def test_parse_variants() -> None:
    assert parse_variants("int8,float32") == ["float32", "int8"]
    assert parse_variants("int8-loop,int8") == ["int8", "int8-loop"]
    with pytest.raises(TrainerConfigError, match="--variants 'int4'"):
        parse_variants("int4")
    with pytest.raises(TrainerConfigError, match="choose from float32,float16,dynamic,int8"):
        parse_variants(",")


def test_missing_key_fails_before_training(tmp_path: object) -> None:
    proc = subprocess.run(
        [
            sys.executable, "-m", "stream.cli", "train", "--dataset", "digits", "--arch",
            "cnn", "--key", "/nonexistent/edgeinfer.key",
        ],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    assert "error: --key /nonexistent/edgeinfer.key does not exist" in proc.stderr
