"""``images:DIR`` training: mixed sizes and formats streamed from disk, junk skipped."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("tensorflow")

from stream.cli import main  # noqa: E402
from stream.codecs import encode_jpeg  # noqa: E402
from trainer.folder_data import fit_folder_preprocessing, load_folder_dataset  # noqa: E402
from trainer.models import ModelConfig  # noqa: E402
from trainer.train import Hyperparameters, train  # noqa: E402

FORMATS = ("PNG", "JPEG", "BMP", "WEBP")
#: Colour of each class: a tiny CNN separates them in a few epochs.
COLOURS = {"red": (200, 40, 40), "green": (40, 190, 60), "blue": (40, 60, 210)}


def colour_folder(root: Path, per_class: int = 16) -> set[str]:
    """Three colour classes of mixed sizes and formats, plus junk; returns the junk names."""
    rng = np.random.default_rng(0)
    for label, colour in COLOURS.items():
        for i in range(per_class):
            h, w = int(rng.integers(20, 70)), int(rng.integers(20, 70))
            arr = np.clip(rng.normal(colour, 35, size=(h, w, 3)), 0, 255).astype(np.uint8)
            fmt = FORMATS[i % len(FORMATS)]
            (root / label).mkdir(parents=True, exist_ok=True)
            Image.fromarray(arr).save(root / label / f"{i}.{fmt.lower()}", format=fmt)
    (root / "red" / "notes.txt").write_text("not an image")
    (root / "green" / "empty.png").write_bytes(b"")
    # A header that reads fine and pixel data that ends early: found only when decoded.
    data = encode_jpeg(rng.integers(0, 256, size=(128, 128, 3), dtype=np.uint8))
    (root / "blue" / "cut.jpg").write_bytes(data[: len(data) // 2])
    (root / "LICENSE").write_text("CC0")
    return {"notes.txt", "empty.png", "cut.jpg", "LICENSE"}


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, set[str]]:
    root = tmp_path_factory.mktemp("colours")
    return root, colour_folder(root)


def test_train_on_a_messy_folder_skips_and_reports_bad_files(
    folder: tuple[Path, set[str]], tmp_path: Path
) -> None:
    root, junk = folder
    out = tmp_path / "run"
    argv = [
        "train", "--dataset", f"images:{root}", "--arch", "cnn", "--filters", "4,8",
        "--units", "8", "--epochs", "6", "--batch-size", "8", "--image-size", "12x16",
        "--variants", "float32", "--quiet", "--out", str(out),
    ]  # fmt: skip
    assert main(argv) == 0
    report = json.loads((out / "report.json").read_text())
    skipped = {Path(s["path"]).name: s["reason"] for s in report["skipped_files"]}
    assert set(skipped) == junk
    assert "corrupt_image" in skipped["cut.jpg"] and "truncated" in skipped["cut.jpg"]
    assert "empty file" in skipped["empty.png"]
    assert report["peak_rss_bytes"] > 0
    assert report["keras"]["accuracy"] >= 0.9
    assert report["variants"]["float32"]["accuracy"] == report["keras"]["accuracy"]
    run = json.loads((out / "run.json").read_text())
    prep = run["preprocessing"]
    assert (prep["height"], prep["width"], prep["channels"], prep["color"]) == (12, 16, 3, "RGB")
    assert run["data"]["streamed"] and run["data"]["cache"] == "memory"
    assert run["data"]["train"] + run["data"]["validation"] + run["data"]["test"] == 48

    # export re-reads the folder at the size it was trained at.
    again = tmp_path / "export"
    export = ["export", "--model", str(out / "model.keras"), "--variants", "float32"]
    assert main([*export, "--out", str(again)]) == 0
    exported = json.loads((again / "report.json").read_text())
    assert exported["keras"] == report["keras"]
    assert exported["test_samples"] == report["test_samples"]


def test_streamed_and_cached_pipelines_train_identically(
    folder: tuple[Path, set[str]], tmp_path: Path
) -> None:
    root, _ = folder
    histories = []
    for cache in ("memory", "none"):
        result = train(
            f"images:{root}",
            ModelConfig(arch="cnn", filters=(4,), units=4),
            hyperparameters=Hyperparameters(epochs=2, batch_size=8, patience=10, seed=1),
            out_dir=tmp_path / cache,
            verbose=0,
            image_size=(8, 8),
            color="L",
            cache=cache,  # type: ignore[arg-type]
        )
        assert result.data.x_test.shape[1:] == (8, 8, 1)
        assert {Path(s["path"]).name for s in result.skipped_files} >= {"cut.jpg"}
        histories.append(result.history)
    assert histories[0] == histories[1]


def test_preprocessing_statistics_equal_those_of_the_decoded_images(
    folder: tuple[Path, set[str]],
) -> None:
    root, _ = folder
    ds = load_folder_dataset(root, image_size=(10, 10))
    prep = fit_folder_preprocessing(ds)
    from stream.image_folder import load_images

    x, _, skipped = load_images(ds.train_files, ds.geometry)
    assert not skipped  # the unreadable training files were dropped by the statistics pass
    scaled = x.reshape(-1, 3).astype(np.float64) / 255.0
    np.testing.assert_allclose(prep.mean, scaled.mean(axis=0), rtol=1e-9)
    np.testing.assert_allclose(prep.std, scaled.std(axis=0), rtol=1e-6)
