"""An image folder larger than the trainer's memory limit trains: it is streamed, not loaded."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("tensorflow")

#: The limit set on the trainer's data segment (RLIMIT_DATA: heap and anonymous memory,
#: what decoded images would occupy). TensorFlow itself needs about 0.7 GiB of it.
LIMIT = 1 << 30
IMAGES, HEIGHT, WIDTH = 600, 768, 1024
COLOURS = {"red": (190, 60, 50), "green": (60, 170, 70), "blue": (50, 70, 200)}

RUN_LIMITED = """
import resource, sys
resource.setrlimit(resource.RLIMIT_DATA, ({limit}, {limit}))
{body}
"""


def big_images() -> Iterator[tuple[str, Image.Image]]:
    """600 smooth 1024x768 RGB images of three colours: (label, image)."""
    rng = np.random.default_rng(0)
    labels = list(COLOURS)
    for i in range(IMAGES):
        label = labels[i % len(labels)]
        small = rng.normal(COLOURS[label], 40, size=(HEIGHT // 16, WIDTH // 16, 3))
        img = Image.fromarray(np.clip(small, 0, 255).astype(np.uint8))
        yield label, img.resize((WIDTH, HEIGHT), Image.Resampling.BILINEAR)


def big_folder(root: Path) -> int:
    """600 JPEGs of 1024x768 RGB (~90 KB each on disk); returns their decoded size in bytes."""
    for i, (label, img) in enumerate(big_images()):
        (root / label).mkdir(parents=True, exist_ok=True)
        img.save(root / label / f"{i:04d}.jpg", quality=85)
    return IMAGES * HEIGHT * WIDTH * 3


def limited(body: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    code = RUN_LIMITED.format(limit=LIMIT, body=body)
    return subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=cwd,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"},
        check=False,
    )


@pytest.mark.slow
def test_a_folder_larger_than_the_memory_limit_trains(tmp_path: Path) -> None:
    root = tmp_path / "photos"
    decoded = big_folder(root)
    assert decoded > LIMIT * 1.2

    # The limit bites: the decoded folder cannot even be allocated under it.
    control = limited(f"import numpy as np; np.ones({decoded}, np.uint8)", tmp_path)
    assert control.returncode != 0 and "MemoryError" in control.stderr

    out = tmp_path / "run"
    argv = [
        "train", "--dataset", f"images:{root}", "--arch", "cnn", "--filters", "8,16",
        "--units", "16", "--epochs", "2", "--image-size", "32x32", "--variants", "float32",
        "--quiet", "--out", str(out),
    ]  # fmt: skip
    run = limited(f"from stream.cli import main; sys.exit(main({argv!r}))", tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    peak = report["peak_rss_bytes"]
    print(f"decoded folder {decoded / 2**30:.2f} GiB, limit {LIMIT / 2**30:.2f} GiB, "
          f"trainer peak RSS {peak / 2**30:.2f} GiB")  # fmt: skip
    # The proof is the run itself: it trained under a data limit below the decoded size,
    # where materialising the folder fails (the control above). Peak RSS is reported, not
    # bounded: it also counts TensorFlow's shared libraries, which RLIMIT_DATA does not
    # (seen: 0.74 GiB on a loaded machine, 1.41 GiB in a fresh CI clone).
    assert peak > 0
    assert report["keras"]["accuracy"] >= 0.9
    assert report["test_samples"] == IMAGES // 4
    assert json.loads((out / "run.json").read_text())["data"]["streamed"] is True
