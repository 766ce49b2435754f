"""``--arch auto`` (a choice on the validation split) and ``--baseline minirocket``."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from stream.datasets import Dataset, load_dataset
from trainer.baseline import run_baseline
from trainer.exceptions import TrainerConfigError
from trainer.search import candidates, summary, validation_score


def test_candidates_fit_the_data() -> None:
    assert candidates("auto", "sequence") == ("minirocket", "conv1d", "gru", "lstm")
    assert candidates("auto", "image") == ("cnn",)
    assert candidates("gru", "sequence") == ("gru",)
    with pytest.raises(TrainerConfigError, match="--arch cnn does not fit sequence data"):
        candidates("cnn", "sequence")


def test_the_score_is_taken_at_the_epoch_early_stopping_restores() -> None:
    history = {"val_loss": [0.9, 0.4, 0.5], "val_accuracy": [0.5, 0.8, 0.9], "loss": [1, 1, 1]}
    assert validation_score(history) == (0.8, -0.4)
    assert validation_score(history) > validation_score({"val_loss": [0.3], "val_accuracy": [0.7]})
    assert summary("gru", history, 12.34) == {
        "arch": "gru", "val_accuracy": 0.8, "val_loss": 0.4, "epochs": 3, "seconds": 12.3,
    }  # fmt: skip


def test_equal_accuracies_in_float32_and_float64_tie_and_the_loss_decides() -> None:
    keras_like = {"val_loss": [1.04], "val_accuracy": [float(np.float32(4 / 6))]}
    fitted = {"val_loss": [0.46], "val_accuracy": [4 / 6]}
    assert validation_score(fitted) > validation_score(keras_like)


def tiny_sequences() -> Dataset:
    rng = np.random.default_rng(0)
    n, t = 60, 16
    y = np.arange(n) % 3
    x = rng.normal(0, 0.4, size=(n, t, 2))
    x[:, :, 0] += np.sin(np.linspace(0, 6, t))[None, :] * (y[:, None] - 1)
    return Dataset(
        name="tiny", kind="sequence", x_train=x[:45].astype(np.float32), y_train=y[:45],
        x_test=x[45:].astype(np.float32), y_test=y[45:], labels=["a", "b", "c"],
    )  # fmt: skip


def test_baseline_none_and_images_are_handled_without_aeon_work() -> None:
    assert run_baseline("none", tiny_sequences(), seed=0) is None
    x = np.zeros((4, 2, 2, 1), np.uint8)
    images = Dataset(
        name="img", kind="image", x_train=x, y_train=np.arange(4) % 2, x_test=x[:2],
        y_test=np.arange(2), labels=["a", "b"],
    )  # fmt: skip
    with pytest.raises(TrainerConfigError, match="--baseline minirocket compares sequence models"):
        run_baseline("minirocket", images, seed=0)
    with pytest.raises(
        TrainerConfigError, match="--baseline 'rocket': use one of none, minirocket"
    ):
        run_baseline("rocket", tiny_sequences(), seed=0)


HP_SMALL = {"filters": (4,), "units": 4}


def test_a_spent_budget_starts_no_further_candidate(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    from trainer.models import ModelConfig
    from trainer.train import Hyperparameters, train

    hp = Hyperparameters(epochs=2, batch_size=8, patience=10, seed=1)
    budget = train(
        tiny_sequences(), ModelConfig(arch="auto", **HP_SMALL), hyperparameters=hp,  # type: ignore[arg-type]
        out_dir=tmp_path, verbose=0, search_budget_s=0.0,
    )  # fmt: skip
    assert budget.config.arch == "minirocket"
    assert [s.get("skipped", "") for s in budget.extra["search"]][1:] == [
        "--search-budget 0 s spent"
    ] * 3
    assert json.loads((tmp_path / "run.json").read_text())["search"][0]["arch"] == "minirocket"


@pytest.mark.slow
def test_auto_keeps_the_best_candidate_and_trains_it_as_naming_it_would(tmp_path: Path) -> None:
    pytest.importorskip("tensorflow")
    from trainer.models import ModelConfig
    from trainer.train import Hyperparameters, train

    hp = Hyperparameters(epochs=3, batch_size=8, patience=10, seed=1)
    small = HP_SMALL
    auto = train(
        tiny_sequences(), ModelConfig(arch="auto", **small), hyperparameters=hp,  # type: ignore[arg-type]
        out_dir=tmp_path / "auto", verbose=0,
    )  # fmt: skip
    search = auto.extra["search"]
    assert [s["arch"] for s in search] == ["minirocket", "conv1d", "gru", "lstm"]
    chosen = auto.config.arch
    best = max(search, key=lambda s: (s["val_accuracy"], -s["val_loss"]))
    assert chosen == best["arch"]
    run = json.loads((tmp_path / "auto" / "run.json").read_text())
    assert run["model_config"]["arch"] == chosen and run["search"] == search
    named = train(
        tiny_sequences(), ModelConfig(arch=chosen, **small), hyperparameters=hp,
        out_dir=tmp_path / "named", verbose=0,
    )  # fmt: skip
    assert named.history == auto.history


@pytest.mark.slow
def test_minirocket_baseline_on_gunpoint() -> None:
    result = run_baseline("minirocket", load_dataset("aeon:GunPoint"), seed=0)
    assert result is not None and result["accuracy"] >= 0.95
    assert result["implementation"].endswith("MiniRocketClassifier")
